"""django_websocket.messaging.options: broker channel names and history policies, without settings."""

from __future__ import annotations

import pytest

from django_websocket.messaging.options import Options, Policy


def test_channel_names_carry_prefix_and_audience():
    """key() adds the prefix (and audience); channel() removes both."""
    options = Options()
    assert options.key("room:1") == "django_websocket:room:1"
    key = options.key("room:1", "@user:7")
    assert key == "django_websocket:room:1@user:7"
    assert options.channel(key) == "room:1"
    site2 = Options(prefix="site2:")
    assert site2.key("a") == "site2:a" and site2.channel("site2:a@session:x") == "a"


@pytest.mark.parametrize("bad", ["", "a@b", None, 5])
def test_bad_channel_names_are_refused(bad):
    """Empty names, non-strings and the audience separator are ValueError."""
    with pytest.raises(ValueError):
        Options().key(bad)


def test_policy_defaults_and_first_matching_override():
    """The first pattern that matches wins; what it does not say comes from the defaults."""
    assert Options().policy("room") == Policy(100, 3600.0)
    overrides = (("chat:*", {"size": 5}), ("chat:big", {"size": 50}), ("live:*", {"size": 0, "ttl": None}))
    options = Options(history_channels=overrides, history_ttl=60)
    assert options.policy("chat:big") == Policy(5, 60.0)  # first match wins
    assert options.policy("live:x") == Policy(0, None)
    assert not options.policy("live:x").enabled
    assert options.policy("other") == Policy(100, 60.0)
    assert options.policy("other") is options.policy("other")  # looked up once per channel
