# A raw-priority chain that stops tracking tcp/8080, and a prerouting chain that drops it for IPv6.
nft -f - <<'NFT'
table inet tuning {
	chain raw_prerouting {
		type filter hook prerouting priority raw; policy accept;
		tcp dport 8080 notrack
	}
	chain prerouting {
		type filter hook prerouting priority -200; policy accept;
		meta nfproto ipv6 tcp dport 8080 drop
	}
}
NFT
