# Docker's iptables-nft rules as in docker-publishes-8080.sh, with the one container publishing 9000 -> 198.51.100.2:80
# instead. Docker's nat PREROUTING and OUTPUT chains sit at priority -100 (dstnat).
sed 's/--dport 8080 -j DNAT/--dport 9000 -j DNAT/' "$(dirname "$0")/docker-publishes-8080.sh" | sh -e
