# The Redirect steering's table of namespace 'echo' (generation 1 on private port 40635, as HandoffTable renders it)
# behind the default-deny firewall that allows only tcp/8080: the input hook sees :40635 and drops it.
sh "$(dirname "$0")/nft-drop-allows-8080.sh"
nft -f - <<'NFT'
table inet switchover_echo {
	chain prerouting {
		type filter hook prerouting priority filter + 20; policy accept;
		tcp flags & (fin | syn | rst | ack) != syn return
		iif != "lo" tcp dport { 40635 } ct status dnat accept
		iif != "lo" tcp dport { 40635 } drop
	}
	chain nat_prerouting {
		type nat hook prerouting priority -100; policy accept;
		tcp dport 8080 fib daddr type local redirect to :40635 comment "gen=1 pid=3552"
	}
	chain nat_output {
		type nat hook output priority -100; policy accept;
		tcp dport 8080 fib daddr type local redirect to :40635 comment "gen=1 pid=3552"
	}
}
NFT
