# A Tproxy steering table of namespace 'echo' (generation 2 on private port 40701, as HandoffTable renders it)
# behind the default-deny firewall that allows tcp/8080.
sh "$(dirname "$0")/nft-drop-allows-8080.sh"
nft -f - <<'NFT'
table inet switchover_echo {
	chain prerouting {
		type filter hook prerouting priority filter + 20; policy accept;
		tcp flags & (fin | syn | rst | ack) != syn return
		iif != "lo" tcp dport { 40701 } drop
		tcp dport 8080 fib daddr type local tproxy to :40701 ct mark set ct mark & 0xff00ffff | 0x00030000 accept comment "gen=2 pid=4100"
	}
}
NFT
