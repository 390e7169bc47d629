# A Tproxy steering table of namespace 'echo' (generation 2 on private port 40701, prerouting at mangle priority)
# behind the default-deny firewall that allows tcp/8080.
sh "$(dirname "$0")/nft-drop-allows-8080.sh"
nft -f - <<'NFT'
table inet switchover_echo {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		fib daddr type local tcp dport 8080 tproxy to :40701 comment "gen=2 pid=4100"
	}
}
NFT
