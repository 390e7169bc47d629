# Another tool's transparent proxy: every connection to tcp/8080 is redirected to :3128, from the network and locally.
nft -f - <<'NFT'
table ip transparent_proxy {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 8080 redirect to :3128
	}
	chain output {
		type nat hook output priority -100; policy accept;
		fib daddr type local tcp dport 8080 redirect to :3128
	}
}
NFT
