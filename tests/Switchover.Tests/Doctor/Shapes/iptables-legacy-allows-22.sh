# iptables-legacy (x_tables, invisible to nft): default-deny input that allows only ssh.
iptables-legacy -A INPUT -i lo -j ACCEPT
iptables-legacy -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
iptables-legacy -A INPUT -p tcp --dport 22 -j ACCEPT
iptables-legacy -P INPUT DROP
