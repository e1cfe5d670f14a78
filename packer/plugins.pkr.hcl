# Current Packer (≥ 1.7) installs the Amazon plugin from this block (`packer init packer/`).
# Kept alone in this file because Debian's Packer 1.6.6 (the one CI can install) rejects the
# block: .ci/deploy-checks validates the other files without it.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
  }
}
