# The Azure image: a VM from the base's Marketplace image, provisioned with the same scripts as the
# local template, generalized, and captured as a managed image. Nothing goes to a gallery here:
# switchyard scans what this build downloads (the scan inputs below), gates on it, and only then
# publishes the gallery version from the managed image through the SDK, with its tags and
# excludeFromLatest, and deletes the managed image (docs/decisions/0007).
#
# The scan inputs are the image's own files, taken from inside the build VM before it is
# generalized and laid out like the local artifact (manifest.json, app/, etc/, var/lib/dpkg/status):
# the same scanners (Trivy rootfs for OS packages, secrets and misconfigurations; the OSV matcher
# for the app's Python requirements) and the same compliance and patch records
# (etc/switchyard/compliance.jsonl, etc/switchyard/patch-changes.json) gate both builders.
#
# Authentication is the managed identity of the Azure VM Packer runs on: no secret anywhere. The
# builder uses it when none of subscription_id, client_id, client_secret, client_cert_path, client_jwt
# and tenant_id is set (Packer 1.6.6 reads that combination as "managed identity"; with only
# subscription_id it would start an interactive device login instead), and takes the subscription
# from the VM's instance metadata. With the azure plugin >= 2 a user-assigned identity is chosen by
# adding client_id (see images/README.md).
#
# Packer 1.6.6 (Debian's) has azure-arm built in and validates this file alone:
#   packer validate -var-file=... images/azure.pkr.hcl
# Packer >= 1.7 needs the plugin first: `packer init images/azure-plugins.pkr.hcl`. The plugin block
# lives in its own file because 1.6.6 cannot parse it. See images/README.md.
# switchyard.images.azure_image.AzureImageRequest.packer_variables() gives every variable below.

variable "vm_size" {
  type    = string
  default = "Standard_D2s_v5"
}

variable "build_resource_group" {
  type        = string
  description = "Existing resource group (its region is the build region) for the build VM and managed image."
}

variable "managed_image_name" {
  type        = string
  description = "Name of the managed image the build leaves in build_resource_group (switchyard deletes it after publishing)."
}

variable "output_dir" {
  type        = string
  description = "Absolute local directory the scan inputs are downloaded to."
}

variable "service" {
  type = string
}

variable "app_dir" {
  type        = string
  description = "Absolute path of the app folder exported from the commit (git archive): app/ and switchyard-app.json."
}

variable "base" {
  type = string
}

variable "base_image_publisher" {
  type        = string
  description = "Marketplace image of the base (switchyard.core.versions.BASE_CATALOG)."
}

variable "base_image_offer" {
  type = string
}

variable "base_image_sku" {
  type = string
}

variable "patch_level" {
  type = string
}

variable "app_version" {
  type = string
}

variable "gallery_version" {
  type = string
}

variable "git_commit" {
  type = string
}

variable "fault_profile" {
  type    = string
  default = "{\"error_rate\": 0, \"extra_latency_ms\": 0, \"fail_health\": false}"
}

variable "built_at" {
  type = string
}

variable "packer_manifest_path" {
  type = string
}

locals {
  app_config       = jsondecode(file("${var.app_dir}/switchyard-app.json"))
  install_root     = "/opt/switchyard/${var.service}"
  scan_inputs_name = "${var.service}-${var.gallery_version}.scan-inputs.tar.gz"

  image_manifest = jsonencode({
    schema          = "switchyard.image/v1"
    name            = var.service
    base            = var.base
    patch_level     = var.patch_level
    app_version     = var.app_version
    gallery_version = var.gallery_version
    git_commit      = var.git_commit
    entrypoint      = local.app_config.entrypoint
    service_port    = local.app_config.service_port
    health_path     = local.app_config.health_path
    fault_profile   = jsondecode(var.fault_profile)
    built_at        = var.built_at
  })

  # The full triple travels with the image; the publish step adds the scan summary and SBOM digest.
  image_tags = {
    "switchyard.service" = var.service
    "switchyard.base"    = var.base
    "switchyard.patch"   = var.patch_level
    "switchyard.app"     = var.app_version
    "switchyard.version" = var.gallery_version
    "switchyard.commit"  = var.git_commit
  }
}

source "azure-arm" "image" {
  use_azure_cli_auth = false

  os_type         = "Linux"
  image_publisher = var.base_image_publisher
  image_offer     = var.base_image_offer
  image_sku       = var.base_image_sku
  vm_size         = var.vm_size

  # An existing resource group (the build VM and the managed image land in it, in its region): the
  # build's identity needs rights on it only; publishing to the gallery is switchyard's step.
  build_resource_group_name = var.build_resource_group

  # A managed image only: the gallery version comes from it after the scan gate (not from Packer).
  managed_image_name                = var.managed_image_name
  managed_image_resource_group_name = var.build_resource_group

  azure_tags = local.image_tags
}

build {
  sources = ["source.azure-arm.image"]

  provisioner "file" {
    source      = "${path.root}/scripts/"
    destination = "/tmp/switchyard-scripts"
  }

  provisioner "file" {
    source      = "${var.app_dir}/app/"
    destination = "/tmp/switchyard-app"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "SWITCHYARD_BUILD_MODE=vm",
      "TARGET_ROOT=/",
      "SERVICE=${var.service}",
      "BASE=${var.base}",
      "PATCH_LEVEL=${var.patch_level}",
      "APP_SOURCE=/tmp/switchyard-app",
      "APP_INSTALL_DIR=${local.install_root}/app",
      "INSTALL_ROOT=${local.install_root}",
      "SERVICE_ENTRYPOINT=${join(" ", local.app_config.entrypoint)}",
      "SERVICE_PORT=${local.app_config.service_port}",
      "IMAGE_MANIFEST=${local.image_manifest}",
      "FAULT_PROFILE=${var.fault_profile}",
    ]
    inline = [
      "set -eu",
      "bash /tmp/switchyard-scripts/patch.sh",
      "bash /tmp/switchyard-scripts/faults.sh",
      "bash /tmp/switchyard-scripts/hardening.sh",
      "bash /tmp/switchyard-scripts/install-app.sh",
      "printf '%s\\n' \"$IMAGE_MANIFEST\" > \"$INSTALL_ROOT/manifest.json\"",
    ]
  }

  # The scan inputs, laid out like the local artifact, made before the VM is generalized.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "SWITCHYARD_BUILD_MODE=vm",
      "TARGET_ROOT=/",
      "INSTALL_ROOT=${local.install_root}",
      "SCAN_INPUTS=/tmp/switchyard-scan-inputs.tar.gz",
    ]
    inline = ["bash /tmp/switchyard-scripts/scan-inputs.sh"]
  }

  provisioner "file" {
    direction   = "download"
    source      = "/tmp/switchyard-scan-inputs.tar.gz"
    destination = "${var.output_dir}/${local.scan_inputs_name}"
  }

  # Generalize last: waagent -deprovision+user removes the build user this session logs in as.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "SWITCHYARD_BUILD_MODE=vm",
      "TARGET_ROOT=/",
    ]
    inline     = ["bash /tmp/switchyard-scripts/deprovision.sh"]
    skip_clean = true
  }

  post-processor "manifest" {
    output     = var.packer_manifest_path
    strip_path = true
    custom_data = {
      service         = var.service
      base            = var.base
      patch_level     = var.patch_level
      app_version     = var.app_version
      gallery_version = var.gallery_version
      git_commit      = var.git_commit
      scan_inputs     = local.scan_inputs_name
    }
  }
}
