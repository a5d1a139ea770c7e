# Packer >= 1.7 only: the azure plugin for azure.pkr.hcl. Install it with
#   packer init images/azure-plugins.pkr.hcl
# Packer 1.6.6 has azure-arm built in and cannot parse this block, so it lives alone in this file and
# is never given to 1.6.6 (validate azure.pkr.hcl by its own path, not the images/ directory).
packer {
  required_plugins {
    azure = {
      source  = "github.com/hashicorp/azure"
      version = ">= 2.0.0, < 3.0.0"
    }
  }
}
