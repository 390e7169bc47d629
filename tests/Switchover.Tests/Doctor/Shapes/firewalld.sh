# Real firewalld 1.3.3 (nftables backend), zone public with 8080/tcp added: the fixture of FirewallTests
# (../../../Switchover.Lab/Firewalls/firewalld.nft, made by capture.sh there).
nft -f "$(dirname "$0")/../../../Switchover.Lab/Firewalls/firewalld.nft"
