"""Image versions: base x patch level x app version <-> the gallery's MAJOR.MINOR.PATCH.

An Azure Compute Gallery image version name must be three integers (each an int32). switchyard
packs its triple into those integers so that the gallery's own ordering is the release ordering:

* MAJOR = app version ``a.b.c`` as ``a*1_000_000 + b*1_000 + c`` (a < 2000, b, c < 1000)
* MINOR = patch level ``YYYY.MM[.R]`` as ``YYYY*10_000 + MM*100 + R`` (R = rebuild revision 0..99)
* PATCH = the base's code in :data:`BASE_CATALOG`

A newer app version therefore sorts higher, and within one app version a newer patch level sorts
higher. The mapping is a bijection on valid values: every switchyard version has exactly one
gallery version and one canonical text form, and parsing either gives the same object back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator


class VersionError(ValueError):
    """An app version, patch level, base or gallery version that switchyard cannot accept."""


# Bounds keep MAJOR and MINOR inside a signed 32-bit integer, which is what the gallery allows.
APP_MAJOR_LIMIT = 2000
APP_PART_LIMIT = 1000
REVISION_LIMIT = 100
PATCH_YEAR_MIN = 2000
PATCH_YEAR_MAX = 9999

# Semantic-version core only: no leading zeros, no pre-release or build suffix (an integer gallery
# version cannot order "1.2.3-rc1" before "1.2.3").
_APP_VERSION_RE = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_PATCH_LEVEL_RE = re.compile(r"(\d{4})\.(\d{2})(?:\.([1-9]\d?))?")
_GALLERY_VERSION_RE = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


class _StringValued(BaseModel):
    """A value model that is written as, and may be given as, its canonical string."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def parse(cls, text: str) -> Self:  # pragma: no cover - each subclass defines it
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _accept_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return cls.parse(data).__dict__
        return data

    @model_serializer
    def _as_text(self) -> str:
        return str(self)

    @classmethod
    def _checked(cls, **fields: Any) -> Self:
        """Construct, turning pydantic's wrapping of a bounds error back into a plain VersionError."""
        try:
            return cls(**fields)
        except ValidationError as error:
            raise VersionError(_reason(error)) from None


class AppVersion(_StringValued):
    """The service's release version, ``MAJOR.MINOR.PATCH`` of semantic versioning."""

    major: int
    minor: int
    patch: int

    @model_validator(mode="after")
    def _within_bounds(self) -> Self:
        if not 0 <= self.major < APP_MAJOR_LIMIT:
            raise VersionError(f"app version major {self.major} is out of range: it must be 0..{APP_MAJOR_LIMIT - 1}")
        for name, value in (("minor", self.minor), ("patch", self.patch)):
            if not 0 <= value < APP_PART_LIMIT:
                raise VersionError(f"app version {name} {value} is out of range: it must be 0..{APP_PART_LIMIT - 1}")
        return self

    @classmethod
    def parse(cls, text: str) -> AppVersion:
        match = _APP_VERSION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise VersionError(
                f"app version {text!r} is not MAJOR.MINOR.PATCH: three integers without leading zeros "
                "and without a pre-release or build suffix (e.g. '1.4.2')"
            )
        major, minor, patch = (int(part) for part in match.groups())
        return cls._checked(major=major, minor=minor, patch=patch)

    @property
    def encoded(self) -> int:
        """The gallery MAJOR component."""
        return self.major * 1_000_000 + self.minor * 1_000 + self.patch

    @classmethod
    def decode(cls, encoded: int) -> AppVersion:
        if not 0 <= encoded < APP_MAJOR_LIMIT * 1_000_000:
            raise VersionError(f"gallery MAJOR {encoded} does not encode an app version")
        return cls._checked(major=encoded // 1_000_000, minor=encoded // 1_000 % 1_000, patch=encoded % 1_000)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __lt__(self, other: AppVersion) -> bool:
        return self.encoded < other.encoded

    def __le__(self, other: AppVersion) -> bool:
        return self.encoded <= other.encoded

    def __gt__(self, other: AppVersion) -> bool:
        return self.encoded > other.encoded

    def __ge__(self, other: AppVersion) -> bool:
        return self.encoded >= other.encoded


class PatchLevel(_StringValued):
    """The OS patch baseline: ``YYYY.MM`` for a month's first build, ``YYYY.MM.R`` for rebuild R."""

    year: int
    month: int
    revision: int = 0

    @model_validator(mode="after")
    def _within_bounds(self) -> Self:
        if not PATCH_YEAR_MIN <= self.year <= PATCH_YEAR_MAX:
            raise VersionError(
                f"patch level year {self.year} is out of range: it must be {PATCH_YEAR_MIN}..{PATCH_YEAR_MAX}"
            )
        if not 1 <= self.month <= 12:
            raise VersionError(f"patch level month {self.month} is out of range: it must be 01..12")
        if not 0 <= self.revision < REVISION_LIMIT:
            raise VersionError(
                f"patch level revision {self.revision} is out of range: it must be 0..{REVISION_LIMIT - 1}"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> PatchLevel:
        match = _PATCH_LEVEL_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise VersionError(
                f"patch level {text!r} is not YYYY.MM or YYYY.MM.R (e.g. '2026.11', or '2026.11.2' for the "
                "second rebuild that month; R is 1..99 without leading zeros, the first build has no R)"
            )
        year, month, revision = match.groups()
        return cls._checked(year=int(year), month=int(month), revision=int(revision or 0))

    @property
    def encoded(self) -> int:
        """The gallery MINOR component."""
        return self.year * 10_000 + self.month * 100 + self.revision

    @classmethod
    def decode(cls, encoded: int) -> PatchLevel:
        return cls._checked(year=encoded // 10_000, month=encoded // 100 % 100, revision=encoded % 100)

    def __str__(self) -> str:
        base = f"{self.year:04d}.{self.month:02d}"
        return f"{base}.{self.revision}" if self.revision else base

    def same_month(self, other: PatchLevel) -> bool:
        return (self.year, self.month) == (other.year, other.month)

    def __lt__(self, other: PatchLevel) -> bool:
        return self.encoded < other.encoded

    def __le__(self, other: PatchLevel) -> bool:
        return self.encoded <= other.encoded

    def __gt__(self, other: PatchLevel) -> bool:
        return self.encoded > other.encoded

    def __ge__(self, other: PatchLevel) -> bool:
        return self.encoded >= other.encoded


class MarketplaceImage(BaseModel):
    """The Azure Marketplace image a base is built from (the azure-arm builder's source image)."""

    model_config = ConfigDict(frozen=True)

    publisher: str
    offer: str
    sku: str


class BaseSpec(BaseModel):
    """One entry of the base catalog."""

    model_config = ConfigDict(frozen=True)

    name: str
    code: int
    marketplace: MarketplaceImage


# Codes are part of every published gallery version: never renumber or reuse one, only append.
_CATALOG_ENTRIES: tuple[BaseSpec, ...] = (
    BaseSpec(
        name="debian-12",
        code=1,
        marketplace=MarketplaceImage(publisher="Debian", offer="debian-12", sku="12-gen2"),
    ),
    BaseSpec(
        name="ubuntu-22.04",
        code=2,
        marketplace=MarketplaceImage(publisher="Canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts-gen2"),
    ),
    BaseSpec(
        name="ubuntu-24.04",
        code=3,
        marketplace=MarketplaceImage(publisher="Canonical", offer="ubuntu-24_04-lts", sku="server"),
    ),
)
BASE_CATALOG: dict[str, BaseSpec] = {entry.name: entry for entry in _CATALOG_ENTRIES}
_BASES_BY_CODE: dict[int, BaseSpec] = {entry.code: entry for entry in _CATALOG_ENTRIES}


class Base(_StringValued):
    """An OS base from the catalog, written as its name (e.g. ``debian-12``)."""

    name: str

    @model_validator(mode="after")
    def _in_catalog(self) -> Self:
        if self.name not in BASE_CATALOG:
            known = ", ".join(sorted(BASE_CATALOG))
            raise VersionError(f"unknown base {self.name!r}: the known bases are {known}")
        return self

    @classmethod
    def parse(cls, text: str) -> Base:
        if not isinstance(text, str):
            raise VersionError(f"base must be a name such as 'debian-12', not {text!r}")
        return cls._checked(name=text.strip())

    @classmethod
    def from_code(cls, code: int) -> Base:
        spec = _BASES_BY_CODE.get(code)
        if spec is None:
            known = ", ".join(f"{entry.code} ({entry.name})" for entry in _CATALOG_ENTRIES)
            raise VersionError(f"gallery PATCH {code} is not a known base code: known codes are {known}")
        return cls(name=spec.name)

    @property
    def spec(self) -> BaseSpec:
        return BASE_CATALOG[self.name]

    @property
    def code(self) -> int:
        return self.spec.code

    def __str__(self) -> str:
        return self.name


class ImageVersion(BaseModel):
    """One image: a base, a patch level and an app version, with its gallery version name."""

    model_config = ConfigDict(frozen=True)

    base: Base
    patch_level: PatchLevel
    app_version: AppVersion

    @classmethod
    def of(cls, base: str, patch_level: str, app_version: str) -> ImageVersion:
        """Build from the three texts, each checked with its own precise error."""
        return cls(
            base=Base.parse(base),
            patch_level=PatchLevel.parse(patch_level),
            app_version=AppVersion.parse(app_version),
        )

    @property
    def gallery_version(self) -> str:
        return f"{self.app_version.encoded}.{self.patch_level.encoded}.{self.base.code}"

    @classmethod
    def from_gallery_version(cls, gallery_version: str) -> ImageVersion:
        match = _GALLERY_VERSION_RE.fullmatch(gallery_version.strip()) if isinstance(gallery_version, str) else None
        if match is None:
            raise VersionError(
                f"gallery version {gallery_version!r} is not MAJOR.MINOR.PATCH (three integers without leading zeros)"
            )
        major, minor, patch = (int(part) for part in match.groups())
        try:
            return cls(
                base=Base.from_code(patch),
                patch_level=PatchLevel.decode(minor),
                app_version=AppVersion.decode(major),
            )
        except VersionError as error:
            raise VersionError(f"gallery version {gallery_version!r} was not made by switchyard: {error}") from None

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """The gallery's own ordering (app, then patch level, then base code)."""
        return (self.app_version.encoded, self.patch_level.encoded, self.base.code)

    def __str__(self) -> str:
        return f"{self.base} {self.patch_level} app {self.app_version} ({self.gallery_version})"

    def __lt__(self, other: ImageVersion) -> bool:
        return self.sort_key < other.sort_key

    def __le__(self, other: ImageVersion) -> bool:
        return self.sort_key <= other.sort_key

    def __gt__(self, other: ImageVersion) -> bool:
        return self.sort_key > other.sort_key

    def __ge__(self, other: ImageVersion) -> bool:
        return self.sort_key >= other.sort_key


def _reason(error: ValidationError) -> str:
    """The messages of the VersionErrors that pydantic wrapped in a ValidationError."""
    return "; ".join(str(item.get("ctx", {}).get("error", item["msg"])) for item in error.errors())


def next_patch_level(
    year: int,
    month: int,
    *,
    base: Base | str,
    app_version: AppVersion | str,
    existing: Iterable[ImageVersion | str],
) -> PatchLevel:
    """The patch level for the next build of (base, app version) in the given month.

    The first build of a month is ``YYYY.MM``; each rebuild of the same app version on the same base
    in that month takes the next revision (``YYYY.MM.1``, ``YYYY.MM.2``, ...). ``existing`` holds the
    versions already in the gallery (ImageVersion objects or gallery version strings, which must all be
    switchyard's own). Versions of other apps or other bases do not collide, so they do not count.
    """
    wanted_base = base if isinstance(base, Base) else Base.parse(base)
    wanted_app = app_version if isinstance(app_version, AppVersion) else AppVersion.parse(app_version)
    this_month = PatchLevel._checked(year=year, month=month)
    revisions = []
    for item in existing:
        version = item if isinstance(item, ImageVersion) else ImageVersion.from_gallery_version(item)
        if (
            version.base == wanted_base
            and version.app_version == wanted_app
            and version.patch_level.same_month(this_month)
        ):
            revisions.append(version.patch_level.revision)
    if not revisions:
        return this_month
    following = max(revisions) + 1
    if following >= REVISION_LIMIT:
        raise VersionError(
            f"no rebuild revision left in {this_month} for {wanted_base} app {wanted_app}: "
            f"revisions 0..{REVISION_LIMIT - 1} are used"
        )
    return PatchLevel._checked(year=year, month=month, revision=following)


def versions_not_moving_forward(requested: AppVersion, running: dict[str, AppVersion]) -> list[str]:
    """Where a merge of `requested` would not move an environment forward (each environment -> the app
    version it runs now). A redelivered or out-of-order merge must never put an older version, or
    the same version again, in front of users."""
    return [
        f"{environment} runs {current}, and {requested} is not newer"
        for environment, current in running.items()
        if not current < requested
    ]
