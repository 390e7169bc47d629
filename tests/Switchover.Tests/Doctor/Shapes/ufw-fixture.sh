# Real ufw 0.36.2 (iptables-nft) with 8080/tcp allowed: the fixture of FirewallTests
# (../../../Switchover.Lab/Firewalls/ufw.rules.v4/.v6, made by capture.sh there).
iptables-restore "$(dirname "$0")/../../../Switchover.Lab/Firewalls/ufw.rules.v4"
ip6tables-restore "$(dirname "$0")/../../../Switchover.Lab/Firewalls/ufw.rules.v6"
