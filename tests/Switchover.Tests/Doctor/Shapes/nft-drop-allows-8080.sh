# Native nftables, default-deny input that allows tcp/8080 (the shape of ../shared/design/firewalls.md, plus ICMPv6 so
# that IPv6 neighbour discovery works).
nft -f - <<'NFT'
table inet host_fw {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 8080 accept
	}
}
NFT
