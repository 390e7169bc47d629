# Native nftables, default-deny input that allows tcp/8080 but forgets lo: network clients and local clients of 8080
# get through, a new generation's readiness request to its own private port over loopback does not.
nft -f - <<'NFT'
table inet host_fw {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 8080 accept
	}
}
NFT
