#!/usr/bin/env bash
# Runs as root on the Packer build instance (Amazon Linux 2023). Expects the files the template
# uploaded to /tmp: framewire, framewire.service, framewire@.service, framewire.toml, operations.md.
set -euxo pipefail

# Runtime libraries the binary links dynamically (librdkafka and openh264 are static), and
# libjpeg-turbo's TurboJPEG library, which framewire loads at start for ~3× faster JPEG.
rpm -q libstdc++ zlib turbojpeg >/dev/null || dnf -y install libstdc++ zlib turbojpeg

# The service user: no shell, no home of its own; /var/lib/framewire is its StateDirectory.
getent group framewire >/dev/null || groupadd --system framewire
getent passwd framewire >/dev/null ||
  useradd --system --gid framewire --home-dir /var/lib/framewire --no-create-home \
    --shell /sbin/nologin --comment "framewire daemon" framewire

install -d -m 0755 -o root -g root /etc/framewire /usr/share/doc/framewire
install -d -m 0750 -o framewire -g framewire /var/lib/framewire /var/lib/framewire/out

install -m 0755 -o root -g root /tmp/framewire /usr/bin/framewire
install -m 0644 -o root -g root /tmp/framewire.service /etc/systemd/system/framewire.service
install -m 0644 -o root -g root '/tmp/framewire@.service' '/etc/systemd/system/framewire@.service'
install -m 0644 -o root -g root /tmp/operations.md /usr/share/doc/framewire/operations.md

# The shipped config, with output under the StateDirectory (the only writable place in the sandbox).
# Readable by the service (it re-reads the file on reload), writable by root only.
# The image has libjpeg-turbo, so the shipped config requires it: a host without it fails
# `framewire validate` (below, and ExecStartPre) instead of silently running 3× slower.
sed -e 's#^path = "./framewire-out"#path = "/var/lib/framewire/out"#' \
  -e 's#^jpeg_codec = "auto"#jpeg_codec = "libjpeg-turbo"#' /tmp/framewire.toml > /etc/framewire/framewire.toml
grep -q '^path = "/var/lib/framewire/out"' /etc/framewire/framewire.toml
grep -q '^jpeg_codec = "libjpeg-turbo"' /etc/framewire/framewire.toml
chown root:framewire /etc/framewire/framewire.toml
chmod 0640 /etc/framewire/framewire.toml

# Secrets and FRAMEWIRE__* overrides (read by systemd as root; never world-readable).
if [ ! -e /etc/default/framewire ]; then
  cat > /etc/default/framewire <<'ENV'
# framewire environment: FRAMEWIRE__SECTION__KEY overrides and the ${VAR}s of framewire.toml.
# Example (Amazon MSK, SASL/SCRAM): MSK_PASSWORD=...
ENV
fi
chown root:framewire /etc/default/framewire
chmod 0640 /etc/default/framewire

printf 'version=%s\ncommit=%s\n' "$FRAMEWIRE_VERSION" "$FRAMEWIRE_COMMIT" > /usr/share/doc/framewire/BUILD

# Fail the bake, not the first boot, when the binary cannot run here (wrong arch, glibc too old)
# or the shipped config is invalid.
/usr/bin/framewire --version
runuser -u framewire -- /usr/bin/framewire validate --config /etc/framewire/framewire.toml

systemctl daemon-reload
systemctl enable framewire.service
rm -f /tmp/framewire /tmp/framewire.service '/tmp/framewire@.service' /tmp/framewire.toml /tmp/operations.md
