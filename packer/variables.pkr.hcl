# Every input of the framewire AMI. Pass with -var name=value or a *.pkrvars.hcl file.

variable "region" {
  type        = string
  default     = "eu-west-1"
  description = "AWS region the AMI is built in (and registered in)."
}

variable "arch" {
  type        = string
  default     = "x86_64"
  description = "CPU architecture: x86_64 or arm64. Must match the binary."

  validation {
    condition     = contains(["x86_64", "arm64"], var.arch)
    error_message = "The arch variable must be \"x86_64\" or \"arm64\"."
  }
}

variable "instance_type" {
  type        = string
  default     = ""
  description = "Build instance type; empty = t3.small for x86_64, t4g.small for arm64."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance (needs a route to the internet or VPC endpoints); empty = the default VPC."
}

variable "source_ami_name" {
  type        = string
  default     = ""
  description = "Name filter of the source AMI; empty = the latest Amazon Linux 2023 for arch (al2023-ami-2023.*-<arch>)."
}

variable "version" {
  type        = string
  default     = "0.1.0"
  description = "framewire version baked in (Cargo.toml's version); tagged on the AMI."
}

variable "commit" {
  type        = string
  default     = "unknown"
  description = "Git commit of the build (git rev-parse HEAD); tagged on the AMI."
}

variable "binary" {
  type        = string
  default     = "target/release/framewire"
  description = "Release binary built by cargo for arch, relative to where packer runs (the repo root)."
}
