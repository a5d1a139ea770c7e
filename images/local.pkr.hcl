# The local image: one deterministic tar.gz holding an image root (docs/architecture.md, "The image
# artifact"), built without a VM. Written for Packer 1.6.6 (Debian's): no packer {} block, no data
# sources, no `packer init`; only built-in components (null builder, shell-local, artifice, checksum,
# manifest). switchyard.images.local_image.build_local_image() passes every variable with absolute paths.

variable "service" {
  type        = string
  description = "Service name, lower-case [a-z][a-z0-9-]*."
}

variable "app_dir" {
  type        = string
  description = "Absolute path of the app folder exported from the commit (git archive): app/ and switchyard-app.json."
}

variable "base" {
  type        = string
  description = "Base from the catalog in switchyard/core/versions.py, e.g. debian-12."
}

variable "patch_level" {
  type        = string
  description = "OS patch level YYYY.MM or YYYY.MM.R."
}

variable "app_version" {
  type        = string
  description = "App version MAJOR.MINOR.PATCH."
}

variable "gallery_version" {
  type        = string
  description = "The gallery version the triple maps to (switchyard.core.versions.ImageVersion)."
}

variable "git_commit" {
  type        = string
  description = "The commit the app was built from."
}

variable "fault_profile" {
  type        = string
  description = "JSON object: error_rate, extra_latency_ms, fail_health, crash_after_s, ssh_password_auth (faults for demos)."
  default     = "{\"error_rate\": 0, \"extra_latency_ms\": 0, \"fail_health\": false}"
}

variable "built_at" {
  type        = string
  description = "Build time, RFC 3339 UTC (2026-11-26T10:00:00Z): manifest field and every tar entry's mtime."
}

variable "output_dir" {
  type        = string
  description = "Absolute directory for the artifact, its checksum and the staging area."
}

variable "packer_manifest_path" {
  type        = string
  description = "Where the manifest post-processor records this build (one file per artifact)."
}

locals {
  app_config    = jsondecode(file("${var.app_dir}/switchyard-app.json"))
  artifact_stem = "${var.service}-${var.gallery_version}"
  artifact_path = "${var.output_dir}/${local.artifact_stem}.tar.gz"
  staging_dir   = "${var.output_dir}/.staging/${local.artifact_stem}"
  image_root    = "${local.staging_dir}/root"

  # manifest.json, schema switchyard.image/v1. jsonencode sorts keys, so it is byte-for-byte stable.
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
}

source "null" "local" {
  communicator = "none"
}

build {
  sources = ["source.null.local"]

  # 1. A fresh staging root with the manifest.
  provisioner "shell-local" {
    environment_vars = [
      "STAGING_DIR=${local.staging_dir}",
      "IMAGE_ROOT=${local.image_root}",
      "IMAGE_MANIFEST=${local.image_manifest}",
    ]
    inline = [
      "set -eu",
      "rm -rf \"$STAGING_DIR\"",
      "mkdir -p \"$IMAGE_ROOT/provisioning\"",
      "printf '%s\\n' \"$IMAGE_MANIFEST\" > \"$IMAGE_ROOT/manifest.json\"",
    ]
  }

  # 2. The provisioning scripts the Azure template runs on a VM, here against the staging root.
  provisioner "shell-local" {
    environment_vars = [
      "SWITCHYARD_BUILD_MODE=local",
      "TARGET_ROOT=${local.image_root}",
      "PROVISIONING_LOG_DIR=${local.image_root}/provisioning",
      "SCRIPTS_DIR=${path.root}/scripts",
      "SERVICE=${var.service}",
      "BASE=${var.base}",
      "PATCH_LEVEL=${var.patch_level}",
      "APP_SOURCE=${var.app_dir}/app",
      "APP_INSTALL_DIR=${local.image_root}/app",
      "FAULT_PROFILE=${var.fault_profile}",
    ]
    inline = [
      "set -eu",
      "bash \"$SCRIPTS_DIR/patch.sh\"",
      "bash \"$SCRIPTS_DIR/faults.sh\"",
      "bash \"$SCRIPTS_DIR/hardening.sh\"",
      "bash \"$SCRIPTS_DIR/install-app.sh\"",
      "bash \"$SCRIPTS_DIR/deprovision.sh\"",
    ]
  }

  # 3. A deterministic tar.gz: entries in byte order without a ./ prefix, owner root, one mtime
  #    (built_at), no write bits for group/other, gzip without name or timestamp. Same inputs, same
  #    sha256. Written beside the target and renamed, so a failed build never leaves a partial artifact.
  provisioner "shell-local" {
    environment_vars = [
      "STAGING_DIR=${local.staging_dir}",
      "IMAGE_ROOT=${local.image_root}",
      "ARTIFACT=${local.artifact_path}",
      "BUILT_AT=${var.built_at}",
    ]
    inline = [
      "set -eu",
      "epoch=$(date -u -d \"$BUILT_AT\" +%s)",
      "(cd \"$IMAGE_ROOT\" && find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z) > \"$STAGING_DIR/entries\"",
      "tar -C \"$IMAGE_ROOT\" --null --no-recursion -T \"$STAGING_DIR/entries\" --format=gnu --owner=0 --group=0 --numeric-owner --mtime=\"@$epoch\" --mode=go-w -cf \"$STAGING_DIR/image.tar\"",
      "gzip -9 -n \"$STAGING_DIR/image.tar\"",
      "mv -f \"$STAGING_DIR/image.tar.gz\" \"$ARTIFACT\"",
      "rm -rf \"$STAGING_DIR\"",
      "rmdir \"$(dirname \"$STAGING_DIR\")\" 2>/dev/null || true",
      "echo \"artifact: $ARTIFACT\"",
    ]
  }

  post-processors {
    post-processor "artifice" {
      files = [local.artifact_path]
    }
    post-processor "checksum" {
      checksum_types = ["sha256"]
      output         = "${local.artifact_path}.{{.ChecksumType}}"
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
        artifact        = "${local.artifact_stem}.tar.gz"
      }
    }
  }
}
