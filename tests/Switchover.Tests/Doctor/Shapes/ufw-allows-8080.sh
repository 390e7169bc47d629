# Real ufw (Debian's 0.36.2): 'ufw enable' and 'ufw allow 8080/tcp', as a user would. ufw keeps its configuration in
# /etc/ufw and its lock in /run/ufw.lock: it runs in a private mount namespace over a copy of /etc/ufw and an empty
# /run, so nothing of the host is written.
unshare -m --propagation private sh -ec '
	copy=$(mktemp -d)
	cp -a /etc/ufw/. "$copy/"
	mount --bind "$copy" /etc/ufw
	mount -t tmpfs tmpfs /run
	ufw --force enable >/dev/null
	ufw allow 8080/tcp >/dev/null
	umount /run
	umount /etc/ufw
	rm -rf "$copy"
'
