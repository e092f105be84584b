"""The plain check in front of jsonschema (xmsysapi.plainly_valid) never passes what it fails.

It spares the common, valid X-MSYS-API header the import of jsonschema at start-up; anything
it does not pass goes to jsonschema, which gives the verdict and the error text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter import xmsysapi

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = xmsysapi._schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["campaign_id", "metadata", "tags", "options", "other"])
option_keys = st.sampled_from(
    ["open_tracking", "click_tracking", "transactional", "skip_suppression", "x"]
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "campaign_id": json_values,
        "metadata": json_values,
        "tags": st.lists(json_values, max_size=3) | json_values,
        "options": st.dictionaries(option_keys, json_values, max_size=4) | json_values,
        "other": json_values,
    },
)


@settings(max_examples=500, deadline=None)
@given(headers | json_values)
def test_plain_check_agrees_with_jsonschema_on_our_schema(value):
    assert xmsysapi.plainly_valid(SCHEMA, value) == VALIDATOR.is_valid(value)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["minLength", "enum", "required", "$ref", "anyOf"]))
def test_a_schema_with_other_keywords_is_left_to_jsonschema(value, keyword):
    schema = {"type": "object", "properties": {"tags": {"type": "array", keyword: 1}}}
    assert not xmsysapi.plainly_valid(schema, {"tags": []})
    assert not xmsysapi.plainly_valid(True, value)  # a boolean schema: not ours to read


def test_bool_is_no_number_and_integral_floats_are_integers():
    assert not xmsysapi.plainly_valid({"type": "integer"}, True)
    assert xmsysapi.plainly_valid({"type": "integer"}, 2.0)
    assert not xmsysapi.plainly_valid({"type": "number"}, False)


def test_a_valid_header_is_parsed_without_importing_jsonschema():
    header = {"campaign_id": "c", "tags": ["a"], "options": {"open_tracking": True}}
    probe = (
        "import json, sys\n"
        "from smtpapi_milter import xmsysapi\n"
        f"xmsysapi.parse({json.dumps(json.dumps(header))})\n"
        "print('jsonschema' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.decode().strip() == "False"
