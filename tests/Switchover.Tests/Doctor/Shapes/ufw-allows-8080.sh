# Real ufw (Debian's 0.36.2): 'ufw enable' and 'ufw allow 8080/tcp', as a user would. ufw keeps its configuration in
# /etc/ufw: it runs in a private mount namespace over a copy, so the host's /etc/ufw is never written.
unshare -m --propagation private sh -ec '
	copy=$(mktemp -d)
	cp -a /etc/ufw/. "$copy/"
	mount --bind "$copy" /etc/ufw
	ufw --force enable >/dev/null
	ufw allow 8080/tcp >/dev/null
	umount /etc/ufw
	rm -rf "$copy"
'
