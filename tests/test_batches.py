"""The one batch-name grammar and order (mlops_assets.batches)."""

from __future__ import annotations

import pytest

from mlops_assets.batches import (
    BatchNameError,
    batch_sort_key,
    check_batch_name,
    is_batch_name,
    is_number,
    sorted_batches,
)


@pytest.mark.parametrize(
    "name",
    ["2018", "1974", "2018.5", "2024-01-31", "q3_2024", "A.b-c_9", "x" * 64],
)
def test_names_in_the_grammar(name: str) -> None:
    assert check_batch_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "is empty"),
        ("../../x", "may hold only"),
        ("..", "may hold only"),
        (".hidden", "may hold only"),
        ("a/b", "may hold only"),
        ("a\\b", "may hold only"),
        (" 2018", "may hold only"),
        ("2018 ", "may hold only"),
        ("2018\n", "may hold only"),
        ("-5", "may hold only"),
        ("٢٠١٨", "may hold only"),  # Arabic-Indic digits
        ("２０１８", "may hold only"),  # full-width digits
        ("a\x00b", "may hold only"),
        ("</script>", "may hold only"),
        ("x" * 65, "65 characters long (at most 64)"),
        (2018, "is a int, not a string"),
    ],
)
def test_names_outside_the_grammar_are_refused_naming_them(name: object, why: str) -> None:
    assert not is_batch_name(name)
    with pytest.raises(BatchNameError) as error:
        check_batch_name(name, where="landing file")
    assert why in str(error.value)
    assert str(error.value).startswith(f"landing file {name!r}"[:40])


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("2018", True),
        ("2018.5", True),
        ("0", True),
        ("1e9", False),
        ("inf", False),
        ("nan", False),
        ("Infinity", False),
        ("1_000", False),
        ("2018.", False),
        (".5", False),
        ("١٢", False),
        ("0x10", False),
    ],
)
def test_only_ascii_decimals_are_numbers(name: str, number: bool) -> None:
    assert is_number(name) is number


def test_numbers_sort_by_value_before_every_other_name() -> None:
    names = ["a", "1e9", "2019", "10", "9", "2018.5", "inf", "1990", "2018-01", "B"]
    assert sorted_batches(names) == ["9", "10", "1990", "2018.5", "2019", "1e9", "2018-01", "B", "a", "inf"]
    # The newest batch the nightly recheck picks is a real year, not "1e9" or "inf".
    assert max(["1974", "2018", "1e9", "inf"], key=lambda n: (batch_sort_key(n)[0] == 0, batch_sort_key(n))) == "2018"
    assert batch_sort_key("1e9") > batch_sort_key("2018")  # a name, after every number
