"""app/requirements.txt: exact pins only, every other line named in the error."""

from __future__ import annotations

import pytest

from switchyard.images.scanners.requirements import RequirementsError, normalize_name, parse_requirements


def test_pins_with_comments_extras_markers_and_hashes() -> None:
    text = (
        "# generated lock\n"
        "\n"
        "Flask==0.12  # web\n"
        'requests[socks]==2.19.1 ; python_version >= "3.8" \\\n'
        "    --hash=sha256:aaaa \\\n"
        "    --hash=sha256:bbbb\n"
        "Jinja2 === 2.10\n"
        "zope.interface==6.0\n"
    )
    pins = parse_requirements(text)
    assert [(pin.name, pin.normalized_name, pin.version, pin.line_number) for pin in pins] == [
        ("Flask", "flask", "0.12", 3),
        ("requests", "requests", "2.19.1", 4),
        ("Jinja2", "jinja2", "2.10", 7),
        ("zope.interface", "zope-interface", "6.0", 8),
    ]


def test_a_lock_of_only_comments_has_no_pins() -> None:
    assert parse_requirements("# stdlib only\n\n# nothing to pin\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flask\n", "line 1: 'flask' is not pinned"),
        ("# ok\nflask>=1.0\n", "line 2: 'flask>=1.0' is not pinned"),
        ("flask==1.*\n", "is not pinned"),
        ("flask==1.0,<2\n", "is not pinned"),
        ("flask @ https://example.invalid/flask.whl\n", "is not pinned"),
        ("-r base.txt\n", "options are not allowed"),
        ("-e .\n", "options are not allowed"),
        ("fl ask==1.0\n", "is not a requirement"),
        ("flask==1.0\nFlask==2.0\n", "line 2: 'Flask==2.0' pins Flask again (first on line 1)"),
    ],
)
def test_anything_but_an_exact_pin_is_an_error_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(RequirementsError) as raised:
        parse_requirements(text, source="app/requirements.txt")
    assert message in str(raised.value)
    assert str(raised.value).startswith("app/requirements.txt line")


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("Flask", "flask"),
        ("zope.interface", "zope-interface"),
        ("Foo__Bar-.baz", "foo-bar-baz"),
        ("PyYAML", "pyyaml"),
    ],
)
def test_pep503_normalisation(name: str, normalized: str) -> None:
    assert normalize_name(name) == normalized
