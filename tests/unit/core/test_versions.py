"""Image versions: the triple <-> gallery version mapping, its ordering and its errors."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from switchyard.core.versions import (
    BASE_CATALOG,
    AppVersion,
    Base,
    ImageVersion,
    PatchLevel,
    VersionError,
    next_patch_level,
)

# Edges and a few middles of every component: exhaustive over their product (~10k versions).
APP_PARTS_MAJOR = [0, 1, 9, 10, 999, 1000, 1999]
APP_PARTS_MINOR = [0, 1, 42, 999]
APP_PARTS_PATCH = [0, 7, 999]
PATCH_LEVELS = [
    (2000, 1, 0),
    (2026, 1, 0),
    (2026, 11, 0),
    (2026, 11, 1),
    (2026, 11, 99),
    (2026, 12, 5),
    (9999, 12, 99),
]
BASES = sorted(BASE_CATALOG)


def all_versions() -> list[ImageVersion]:
    return [
        ImageVersion(
            base=Base(name=base),
            patch_level=PatchLevel(year=year, month=month, revision=revision),
            app_version=AppVersion(major=major, minor=minor, patch=patch),
        )
        for major, minor, patch in itertools.product(APP_PARTS_MAJOR, APP_PARTS_MINOR, APP_PARTS_PATCH)
        for year, month, revision in PATCH_LEVELS
        for base in BASES
    ]


def test_the_architecture_example_maps_both_ways() -> None:
    version = ImageVersion.of("debian-12", "2026.11", "1.4.2")
    assert version.gallery_version == "1004002.20261100.1"
    assert ImageVersion.from_gallery_version("1004002.20261100.1") == version


def test_every_version_round_trips_through_its_gallery_version_and_its_texts() -> None:
    versions = all_versions()
    gallery_versions = {version.gallery_version for version in versions}
    assert len(gallery_versions) == len(versions), "two versions share a gallery version"
    for version in versions:
        assert ImageVersion.from_gallery_version(version.gallery_version) == version
        again = ImageVersion.of(str(version.base), str(version.patch_level), str(version.app_version))
        assert again == version
        assert ImageVersion.model_validate_json(version.model_dump_json()) == version


def test_gallery_parts_fit_azures_int32_limit() -> None:
    limit = 2**31 - 1
    for version in all_versions():
        assert all(0 <= int(part) <= limit for part in version.gallery_version.split("."))


def gallery_tuple(version: ImageVersion) -> tuple[int, ...]:
    return tuple(int(part) for part in version.gallery_version.split("."))


def test_gallery_ordering_is_release_ordering() -> None:
    versions = all_versions()
    for first, second in itertools.combinations(versions[::7], 2):
        # The gallery orders numerically, part by part; that must agree with the model's ordering.
        assert (gallery_tuple(first) < gallery_tuple(second)) == (first < second)
        if first.app_version != second.app_version:
            newer_app = first.app_version > second.app_version
            assert (first > second) == newer_app, "a newer app version must sort higher"
        elif first.patch_level != second.patch_level:
            newer_patch = first.patch_level > second.patch_level
            assert (first > second) == newer_patch, "with the same app, a newer patch level must sort higher"


def test_newer_app_beats_newer_patch_level() -> None:
    old_app_new_patch = ImageVersion.of("debian-12", "2027.01", "1.4.2")
    new_app_old_patch = ImageVersion.of("debian-12", "2026.01", "1.4.3")
    assert new_app_old_patch > old_app_new_patch
    assert max([old_app_new_patch, new_app_old_patch]) == new_app_old_patch


def test_rebuild_revision_sorts_after_the_months_first_build() -> None:
    assert PatchLevel.parse("2026.11.1") > PatchLevel.parse("2026.11")
    assert PatchLevel.parse("2026.12") > PatchLevel.parse("2026.11.99")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.2", "is not MAJOR.MINOR.PATCH"),
        ("01.2.3", "without leading zeros"),
        ("1.02.3", "without leading zeros"),
        ("1.2.3-rc1", "pre-release"),
        ("1.2.3+build5", "build suffix"),
        ("v1.2.3", "is not MAJOR.MINOR.PATCH"),
        ("", "is not MAJOR.MINOR.PATCH"),
        ("2000.0.0", "major 2000 is out of range: it must be 0..1999"),
        ("1.1000.0", "minor 1000 is out of range: it must be 0..999"),
        ("1.0.1000", "patch 1000 is out of range: it must be 0..999"),
    ],
)
def test_invalid_app_versions_are_named_precisely(text: str, message: str) -> None:
    with pytest.raises(VersionError, match="app version") as raised:
        AppVersion.parse(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026.13", "month 13 is out of range: it must be 01..12"),
        ("2026.00", "month 0 is out of range"),
        ("2026.1", "is not YYYY.MM or YYYY.MM.R"),
        ("26.11", "is not YYYY.MM or YYYY.MM.R"),
        ("2026.11.0", "the first build has no R"),
        ("2026.11.01", "without leading zeros"),
        ("2026.11.100", "is not YYYY.MM or YYYY.MM.R"),
        ("1999.12", "year 1999 is out of range"),
        ("2026-11", "is not YYYY.MM or YYYY.MM.R"),
    ],
)
def test_invalid_patch_levels_are_named_precisely(text: str, message: str) -> None:
    with pytest.raises(VersionError, match="patch level") as raised:
        PatchLevel.parse(text)
    assert message in str(raised.value)


def test_an_unknown_base_lists_the_known_ones() -> None:
    with pytest.raises(VersionError) as raised:
        Base.parse("centos-7")
    assert str(raised.value) == "unknown base 'centos-7': the known bases are debian-12, ubuntu-22.04, ubuntu-24.04"


def test_base_codes_are_stable() -> None:
    # Codes are inside published gallery versions: changing one would re-map history.
    assert {name: spec.code for name, spec in BASE_CATALOG.items()} == {
        "debian-12": 1,
        "ubuntu-22.04": 2,
        "ubuntu-24.04": 3,
    }
    assert len({spec.code for spec in BASE_CATALOG.values()}) == len(BASE_CATALOG)


@pytest.mark.parametrize(
    ("gallery_version", "message"),
    [
        ("1.2", "is not MAJOR.MINOR.PATCH"),
        ("1.0.0.0", "is not MAJOR.MINOR.PATCH"),
        ("1004002.020261100.1", "is not MAJOR.MINOR.PATCH"),
        ("1004002.20261100.9", "gallery PATCH 9 is not a known base code: known codes are 1 (debian-12)"),
        ("1004002.20261300.1", "month 13 is out of range"),
        ("1004002.20261100.0", "gallery PATCH 0 is not a known base code"),
        ("2000000000.20261100.1", "does not encode an app version"),
        ("1.0.1", "year 0 is out of range"),
    ],
)
def test_foreign_gallery_versions_are_rejected(gallery_version: str, message: str) -> None:
    with pytest.raises(VersionError) as raised:
        ImageVersion.from_gallery_version(gallery_version)
    assert message in str(raised.value)
    assert gallery_version in str(raised.value)


def test_models_validated_from_json_report_the_bad_field() -> None:
    with pytest.raises(ValidationError) as raised:
        ImageVersion.model_validate({"base": "debian-12", "patch_level": "2026.11", "app_version": "1.2"})
    assert raised.value.errors()[0]["loc"] == ("app_version",)
    assert "is not MAJOR.MINOR.PATCH" in str(raised.value)


def test_base_carries_its_marketplace_image() -> None:
    marketplace = Base.parse("ubuntu-22.04").spec.marketplace
    assert (marketplace.publisher, marketplace.offer, marketplace.sku) == (
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts-gen2",
    )


def test_next_patch_level_starts_each_month_without_revision() -> None:
    existing = [
        ImageVersion.of("debian-12", "2026.10", "1.4.2"),
        ImageVersion.of("debian-12", "2026.10.3", "1.4.2"),
    ]
    assert str(next_patch_level(2026, 11, base="debian-12", app_version="1.4.2", existing=existing)) == "2026.11"


def test_next_patch_level_counts_rebuilds_of_the_same_app_and_base_only() -> None:
    existing = [
        ImageVersion.of("debian-12", "2026.11", "1.4.2").gallery_version,
        ImageVersion.of("debian-12", "2026.11.1", "1.4.2").gallery_version,
        # Other apps and other bases do not collide with 1.4.2 on debian-12.
        ImageVersion.of("debian-12", "2026.11.7", "1.4.3").gallery_version,
        ImageVersion.of("ubuntu-24.04", "2026.11.5", "1.4.2").gallery_version,
    ]
    following = next_patch_level(2026, 11, base="debian-12", app_version="1.4.2", existing=existing)
    assert str(following) == "2026.11.2"
    new_version = ImageVersion(
        base=Base.parse("debian-12"), patch_level=following, app_version=AppVersion.parse("1.4.2")
    )
    assert new_version.gallery_version not in existing


def test_next_patch_level_refuses_when_the_month_is_full() -> None:
    existing = [ImageVersion.of("debian-12", "2026.11.99", "1.4.2")]
    with pytest.raises(VersionError, match=r"no rebuild revision left in 2026\.11"):
        next_patch_level(2026, 11, base="debian-12", app_version="1.4.2", existing=existing)


def test_next_patch_level_rejects_foreign_gallery_versions() -> None:
    with pytest.raises(VersionError, match=r"'1\.0\.0' was not made by switchyard"):
        next_patch_level(2026, 11, base="debian-12", app_version="1.4.2", existing=["1.0.0"])


def test_a_merge_must_move_every_environment_forward() -> None:
    from switchyard.core.versions import versions_not_moving_forward

    running = {"staging": AppVersion.parse("2.1.0"), "production": AppVersion.parse("2.0.0")}
    assert versions_not_moving_forward(AppVersion.parse("2.1.1"), running) == []
    assert versions_not_moving_forward(AppVersion.parse("2.1.0"), running) == [
        "staging runs 2.1.0, and 2.1.0 is not newer"
    ]
    assert versions_not_moving_forward(AppVersion.parse("1.9.9"), running) == [
        "staging runs 2.1.0, and 1.9.9 is not newer",
        "production runs 2.0.0, and 1.9.9 is not newer",
    ]
    assert versions_not_moving_forward(AppVersion.parse("0.0.1"), {}) == []
