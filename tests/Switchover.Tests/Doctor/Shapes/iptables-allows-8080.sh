# iptables-nft, the shape of issue #7 (what ufw and firewalld give a host that "allows 8080"), for IPv4 and IPv6.
# -m conntrack is an xt match: nft -j shows only its name, iptables-nft-save shows its options.
for ipt in iptables ip6tables; do
	$ipt -A INPUT -i lo -j ACCEPT
	$ipt -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
	$ipt -A INPUT -p tcp --dport 8080 -j ACCEPT
done
ip6tables -A INPUT -p ipv6-icmp -j ACCEPT
iptables -P INPUT DROP
ip6tables -P INPUT DROP
