# Bakes framewire into an Amazon Linux 2023 AMI: the release binary, the systemd units, the config,
# a `framewire` system user and its directories; framewire.service enabled; IMDSv2 required.
#
#   cargo build --release
#   packer init packer/           # once, current Packer
#   packer build -var version=$(cargo pkgid | cut -d'#' -f2) -var commit=$(git rev-parse HEAD) packer/
#
# Run from the repository root (the binary path is relative to it). See docs/operations.md.

locals {
  instance_type   = var.instance_type != "" ? var.instance_type : (var.arch == "arm64" ? "t4g.small" : "t3.small")
  source_ami_name = var.source_ami_name != "" ? var.source_ami_name : "al2023-ami-2023.*-${var.arch}"
  timestamp       = formatdate("YYYYMMDDhhmmss", timestamp())
  tags = {
    Name        = "framewire-${var.version}-${var.arch}"
    Application = "framewire"
    Version     = var.version
    Commit      = var.commit
    Arch        = var.arch
    BaseAMI     = "{{ .SourceAMI }}"
  }
}

source "amazon-ebs" "al2023" {
  region        = var.region
  instance_type = local.instance_type
  subnet_id     = var.subnet_id
  ssh_username  = "ec2-user"
  ami_name      = "framewire-${var.version}-${var.arch}-${local.timestamp}"

  ami_description = "framewire ${var.version} (${var.commit}) on Amazon Linux 2023 ${var.arch}"

  source_ami_filter {
    filters = {
      name                = local.source_ami_name
      architecture        = var.arch
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  # IMDSv2 only, on the build instance and on every instance launched from the AMI.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags          = local.tags
  snapshot_tags = local.tags
  run_tags      = { Name = "packer-framewire-${var.version}" }
}

build {
  sources = ["source.amazon-ebs.al2023"]

  provisioner "file" {
    source      = var.binary
    destination = "/tmp/framewire"
  }

  provisioner "file" {
    source      = "${path.root}/../systemd/framewire.service"
    destination = "/tmp/framewire.service"
  }

  provisioner "file" {
    source      = "${path.root}/../systemd/framewire@.service"
    destination = "/tmp/framewire@.service"
  }

  provisioner "file" {
    source      = "${path.root}/../etc/framewire.toml"
    destination = "/tmp/framewire.toml"
  }

  provisioner "file" {
    source      = "${path.root}/../docs/operations.md"
    destination = "/tmp/operations.md"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "FRAMEWIRE_VERSION=${var.version}",
      "FRAMEWIRE_COMMIT=${var.commit}",
    ]
    script = "${path.root}/scripts/install.sh"
  }
}
