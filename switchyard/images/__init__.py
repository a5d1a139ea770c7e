"""The image pipeline's library: build (Packer), scan (Trivy, offline OSV), SBOM.

Entry points for the flow's tasks:

* ``switchyard.images.local_image.build_local_image(LocalImageRequest, on_line=..., timeout=...,
  cancel_event=...) -> LocalImage`` (and ``build_local_image_async``);
  ``switchyard.images.packer.PackerRunner`` for ``validate_template`` / ``fmt_check`` /
  ``build_template`` of any template (images/azure.pkr.hcl).
* ``switchyard.images.scan.scan_artifact(artifact, scanners=[TrivyScanner(...), OsvScanner(...)],
  sbom_scanner=..., sbom_path=...) -> ImageScan`` (findings, scanned kinds, SBOM digest).
* Then, pure: ``switchyard.core.scan_policy.evaluate`` (the gate) and
  ``switchyard.core.image_metadata.ImageMetadata.to_tags`` (the gallery tags).
"""
