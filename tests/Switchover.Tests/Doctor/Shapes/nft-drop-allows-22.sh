# Native nftables, default-deny input that allows only ssh: tcp/8080 is dropped by the policy.
nft -f - <<'NFT'
table inet host_fw {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept
	}
}
NFT
