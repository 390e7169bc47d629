# A Tproxy steering table of namespace 'echo' written with a port map (two public ports of generation 3, one rule
# per family), behind the default-deny firewall that allows tcp/8080 only.
sh "$(dirname "$0")/nft-drop-allows-8080.sh"
nft -f - <<'NFT'
table inet switchover_echo {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp fib daddr type local tproxy ip to : tcp dport map { 8080 : 40801, 8443 : 40802 }
		meta l4proto tcp fib daddr type local tproxy ip6 to : tcp dport map { 8080 : 40801, 8443 : 40802 }
	}
}
NFT
