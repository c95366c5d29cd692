#!/bin/sh
# Entry point of a lab host: trust the lab CA the way a corporate CA is trusted (the system
# store), accept the lab's fresh SSH key for the admin user, make host keys unique to this
# container, and run sshd in the foreground.
set -eu
if [ -f /run/lab/ca.crt ]; then
    cp /run/lab/ca.crt /usr/local/share/ca-certificates/pipfeed-lab-ca.crt
    update-ca-certificates >/dev/null 2>&1
fi
install -d -m 0700 -o labadmin -g labadmin /home/labadmin/.ssh
install -m 0600 -o labadmin -g labadmin /run/lab/authorized_keys /home/labadmin/.ssh/authorized_keys
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
