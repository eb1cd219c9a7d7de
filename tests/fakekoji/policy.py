"""Hub policies: Koji's own rule engine with the hub's default rule sets.

The rules run on ``koji.policy.SimpleRuleSet`` (the module kojihub imports),
with the hub's policy tests re-implemented next to their kojihub originals.
``DEFAULT_POLICIES`` is kojihub/kojixmlrpc.py ``_default_policies``; a test
overrides one as a hub.conf ``[policy]`` section would::

    hub.policies["build_from_srpm"] = "all :: allow"
    hub.policies["build_from_scm"] = "match scm_host git.example.com :: allow"
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import koji
import koji.policy
import koji.util

if TYPE_CHECKING:
    from tests.fakekoji.state import HubState

# kojihub/kojixmlrpc.py _default_policies (the rules rpmgate can meet)
DEFAULT_POLICIES = {
    "build_rpm": "all :: allow",
    "build_from_srpm": """
        has_perm admin :: allow
        all :: deny Only admin can do this via default policy
    """,
    "build_from_repo_id": """
        has_perm admin :: allow
        all :: deny Only admin can do this via default policy
    """,
    "build_from_scm": """
        has_perm admin :: allow
        all :: deny Only admin can do this via default policy
    """,
    "package_list": """
        has_perm admin :: allow
        has_perm tag :: allow
        all :: deny Only admin/tag can do this via default policy
    """,
    "channel": """
        has req_channel :: req
        is_child_task :: parent
        all :: use default
    """,
    "priority": "all :: stay",
    "draft_promotion": """
        has_perm draft-promoter :: allow
        is_build_owner :: allow
        all :: deny Only draft-promoter and build owner can do this via default policy
    """,
}


def _tests(state: HubState) -> dict[str, type]:
    """kojihub's policy tests that need hub data, bound to the fake's state."""

    def policy_user(data: dict[str, Any]) -> Any:
        # kojihub policy_get_user: data['user_id'] (the hub's tests never fall
        # back to the session here: kojid passes the task owner)
        if "user_id" in data:
            return state.user_by_id(data["user_id"])
        return None

    class HasPermTest(koji.policy.BaseSimpleTest):
        # kojihub/kojihub.py HasPermTest: the user has any perm matching a pattern
        name = "has_perm"

        def run(self, data: dict[str, Any]) -> bool:
            user = policy_user(data)
            if not user:
                return False
            args = self.str.split()[1:]
            return any(fnmatch.fnmatch(p, pat) for p in user.perms for pat in args)

    class ChildTaskTest(koji.policy.BoolTest):
        # kojihub/kojihub.py ChildTaskTest
        name = "is_child_task"
        field = "parent"

    class MethodTest(koji.policy.MatchTest):
        # kojihub/kojihub.py MethodTest
        name = "method"
        field = "method"

    class UserTest(koji.policy.MatchTest):
        # kojihub/kojihub.py UserTest
        name = "user"
        field = "_username"

        def run(self, data: dict[str, Any]) -> bool:
            user = policy_user(data)
            if not user:
                return False
            data[self.field] = user.name
            return super().run(data)

    class SkipTagTest(koji.policy.BaseSimpleTest):
        # kojihub/kojihub.py SkipTagTest
        name = "skip_tag"

        def run(self, data: dict[str, Any]) -> bool:
            return bool(data.get("skip_tag"))

    class TagTest(koji.policy.MatchTest):
        # kojihub/kojihub.py TagTest: data['tag'] (id or name) matched by name
        name = "tag"
        field = "_tagname"
        key = "tag"

        def run(self, data: dict[str, Any]) -> bool:
            if data.get(self.key) is None:
                return False
            tag = state.tag_by(data[self.key])
            if tag is None:
                return False
            data[self.field] = tag.name
            return super().run(data)

    class FromTagTest(TagTest):
        # kojihub/kojihub.py FromTagTest
        name = "fromtag"
        key = "fromtag"

    class BuildTagTest(koji.policy.BaseSimpleTest):
        # kojihub/kojihub.py BuildTagTest (policy data with build_tag)
        name = "buildtag"

        def run(self, data: dict[str, Any]) -> bool:
            tag = state.tag_by(data["build_tag"]) if data.get("build_tag") else None
            return tag is not None and koji.util.multi_fnmatch(tag.name, self.str.split()[1:])

    class IsBuildOwnerTest(koji.policy.BaseSimpleTest):
        # kojihub/kojihub.py IsBuildOwnerTest: the policy user owns data['build']
        # (group owners: the fake has no groups)
        name = "is_build_owner"

        def run(self, data: dict[str, Any]) -> bool:
            build = state.find_build(data["build"])
            user = policy_user(data)
            if build is None or user is None:
                return False
            return bool(build.owner.id == user.id)

    class PackageTest(koji.policy.MatchTest):
        # kojihub/kojihub.py PackageTest: the name policy_get_pkg finds (data['package'],
        # else the build's package; neither: "policy requires package data")
        name = "package"
        field = "_package"

        def run(self, data: dict[str, Any]) -> bool:
            if "package" in data:
                data[self.field] = str(data["package"])
            elif "build" in data:
                build = state.find_build(data["build"])
                if build is None:
                    raise koji.GenericError(f"No such build: {data['build']}")
                data[self.field] = build.name
            else:
                raise koji.GenericError("policy requires package data")
            return super().run(data)

    class IsDraftTest(koji.policy.BaseSimpleTest):
        # kojihub/kojihub.py IsDraftTest: data['draft'], else the build's draft flag
        name = "is_draft"

        def run(self, data: dict[str, Any]) -> bool:
            if "draft" in data:
                return bool(data["draft"])
            if "build" in data:
                build = state.find_build(data["build"])
                return bool(build is not None and build.draft)
            return False

    class SourceTest(koji.policy.MatchTest):
        # kojihub/kojihub.py SourceTest (policy data with source)
        name = "source"
        field = "_source"

        def run(self, data: dict[str, Any]) -> bool:
            if "source" not in data:
                return False
            data[self.field] = data["source"]
            return super().run(data)

    return {
        t.name: t
        for t in (
            HasPermTest,
            ChildTaskTest,
            MethodTest,
            UserTest,
            SkipTagTest,
            TagTest,
            FromTagTest,
            BuildTagTest,
            SourceTest,
            IsBuildOwnerTest,
            IsDraftTest,
            PackageTest,
        )
    }


class Policies:
    """The hub's ``context.policy``: rule text by name, parsed when applied."""

    def __init__(self, state: HubState) -> None:
        self._state = state
        self.rules: dict[str, str] = dict(DEFAULT_POLICIES)
        #: hub.conf MissingPolicyOk (default True)
        self.missing_policy_ok = True
        #: hub.conf VerbosePolicy: append " [rule: ...]" to denials
        self.verbose = False

    def __getitem__(self, name: str) -> str:
        return self.rules[name]

    def __setitem__(self, name: str, text: str) -> None:
        self.rules[name] = text

    def __delitem__(self, name: str) -> None:
        del self.rules[name]

    def reset(self, name: str) -> None:
        """Back to the hub's default rules (or to no policy, if it has none)."""
        if name in DEFAULT_POLICIES:
            self.rules[name] = DEFAULT_POLICIES[name]
        else:
            self.rules.pop(name, None)

    def ruleset(self, name: str) -> koji.policy.SimpleRuleSet | None:
        text = self.rules.get(name)
        if not text:
            return None
        tests = koji.policy.findSimpleTests(vars(koji.policy))
        tests.update(_tests(self._state))
        return koji.policy.SimpleRuleSet(text.splitlines(), tests)

    def check(self, name: str, data: dict[str, Any], default: str = "deny") -> tuple[bool, str]:
        """kojihub/kojihub.py check_policy: (access, reason) and the last rule."""
        ruleset = self.ruleset(name)
        lastrule = ""
        if ruleset is None:
            result = "allow" if self.missing_policy_ok else "deny"
            reason = "missing policy"
        else:
            action = ruleset.apply(dict(data))
            if action is None:
                result, reason = default, "not covered by policy"
            else:
                parts = action.split(None, 1)
                parts.extend(["", ""])
                result, reason = parts[0].lower(), parts[1]
            lastrule = ruleset.last_rule()
        if result == "allow":
            return True, reason
        if result != "deny":
            reason = "error in policy"
        self._lastrule = lastrule
        return False, reason

    def assert_policy(self, name: str, data: dict[str, Any], default: str = "deny") -> None:
        """kojihub/kojihub.py check_policy(strict=True): HostExports.assertPolicy, assert_policy."""
        allowed, reason = self.check(name, data, default)
        if allowed:
            return
        err_str = f"policy violation ({name})"
        if reason:
            err_str += f": {reason}"
        if self.verbose:
            err_str += f" [rule: {self._lastrule}]"
        raise koji.ActionNotAllowed(err_str)

    def evaluate(self, name: str, data: dict[str, Any]) -> str | None:
        """kojihub/kojihub.py eval_policy (RootExports.evalPolicy)."""
        ruleset = self.ruleset(name)
        if ruleset is None:
            raise koji.GenericError(f"no such policy: {name}")
        return ruleset.apply(dict(data))
