# A host without any firewall: the ruleset is empty.
true
