# Docker 28.5's iptables-nft chains (default bridge, 8081 published to a container) next to a default-deny INPUT that
# allows 8080: the fixture of FirewallTests (../../../Switchover.Lab/Firewalls/docker.rules.v4/.v6).
iptables-restore "$(dirname "$0")/../../../Switchover.Lab/Firewalls/docker.rules.v4"
ip6tables-restore "$(dirname "$0")/../../../Switchover.Lab/Firewalls/docker.rules.v6"
