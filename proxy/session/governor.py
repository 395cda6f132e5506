"""Judges each statement of a governed session against the current policy.

Sans-io: takes SQL text and the session's transaction status, returns what to
send to the backend or why the statement is refused. The session's purpose or
project lives here; the subject is rebuilt from the current PolicyState for
every statement, so a reload applies from the next statement on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from rewrite import Allow, Deny, DPRequest, ProxyHandled, RewriteContext, Rewritten, rewrite_statements
from rewrite.decide import Subject
from rewrite.policy.references import purpose_names

from ..policy_state import SEARCH_PATH, PolicyHolder, PolicyState


_MAX_VERDICTS = 4096


@dataclass(frozen=True, slots=True)
class Forward:
    sql: str
    tables: tuple = ()
    policies: tuple = ()


@dataclass(frozen=True, slots=True)
class Refuse:
    sqlstate: str
    message: str


@dataclass(frozen=True, slots=True)
class AskDP:
    """A differentially private answer is needed first (proxy.dp); the relay suspends until it comes."""

    plan: object  # rewrite.dp.DPPlan


class ContextError(Exception):
    """A purpose/project the user may not choose; the message is for the user."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Governor:
    def __init__(self, holder: PolicyHolder, user: str) -> None:
        self.holder = holder
        self.user = user
        self.purpose: str | None = None
        self.project: str | None = None
        self._ctx: RewriteContext | None = None
        self._ctx_key: tuple | None = None
        # context_key() is asked for on every statement and Bind: the last answer, and what it was computed from
        # (the state object, the holder's generation, purpose, project and validity epoch).
        self._ck: tuple | None = None
        self._ck_of: tuple | None = None
        self._plan_lists: tuple = (None, (), ())  # the last Rewritten plan, its tables and policies for Forward
        # Verdicts of this session by statement text: the hot path of a repeated statement
        # (pgbench, BI dashboards) is one dict lookup. Keyed by everything a verdict depends on.
        self._verdicts: dict[tuple, Forward | Refuse] = {}

    # -- session context ---------------------------------------------------------------

    def choose(self, name: str, value: str | None) -> None:
        """Set pgveil.purpose / pgveil.project (None resets); raises ContextError if not entitled."""
        state = self.holder.current
        user = state.config.users.get(self.user)
        if user is None:
            raise ContextError("28000", f'user "{self.user}" is no longer in the pgveil configuration')
        if name == "pgveil.purpose":
            if value:
                if value not in purpose_names(state.config.purposes):
                    raise ContextError("22023", f'unknown purpose "{value}"')
                if not any(value == p or value.startswith(p + ".") for p in user.purposes):
                    raise ContextError("42501", f'user "{self.user}" may not act under purpose "{value}"')
            self.purpose = value or None
        elif name == "pgveil.project":
            if value:
                project = state.config.projects.get(value)
                if project is None:
                    raise ContextError("22023", f'unknown project "{value}"')
                if self.user not in project.members:
                    raise ContextError("42501", f'user "{self.user}" is not a member of project "{value}"')
            self.project = value or None
        else:
            raise ContextError("42704", f'unrecognized pgveil setting "{name}"')

    def context_key(self) -> tuple:
        """What this session's rewrites depend on besides the text.

        The subject (user, groups, attributes, purposes), the policy version and its
        validity epoch, and the catalog version: a reload that changes none of them for
        this session leaves its prepared statements valid.
        """
        holder = self.holder
        state = holder.current
        policies = state.policies
        epoch = policies.epoch(time.time()) if policies._edges else 0
        of = self._ck_of
        if (of is not None and of[0] is state and of[1] == holder.generation and of[2] == epoch
                and of[3] == self.purpose and of[4] == self.project):
            return self._ck
        ctx = self.context(state)
        key = (ctx.subject.fingerprint, policies.version, epoch, state.catalog.version if state.catalog else None)
        self._ck, self._ck_of = key, (state, holder.generation, epoch, self.purpose, self.project)
        return key

    def subject(self, state: PolicyState) -> Subject:
        user = state.config.users.get(self.user)
        if user is None:
            return Subject(self.user)  # removed by a reload: no groups, no grants
        purposes = set()
        if self.purpose:
            purposes.add(self.purpose)
        if self.project and self.project in state.config.projects:
            purposes.update(state.config.projects[self.project].purposes)
        return Subject(self.user, frozenset(user.groups), {k: frozenset(v) for k, v in user.attributes.items()},
                       frozenset(purposes), bool(user.unrestricted))

    def context(self, state: PolicyState) -> RewriteContext:
        """The rewrite context of this session's statements under ``state`` (kept while nothing it depends on changes)."""
        key = (self.holder.generation, self.purpose, self.project)
        if key != self._ctx_key:
            self._ctx = RewriteContext(self.subject(state), state.policies, state.catalog, state.keys,
                                       search_path=SEARCH_PATH, tags=state.config.tags, gate_context=state.gate_context)
            self._ctx_key = key
        return self._ctx

    # -- statements --------------------------------------------------------------------

    def judge(self, sql: str, *, transaction_status: str, single: bool = False) -> Forward | Refuse | AskDP:
        """What to do with ``sql`` (a simple Query's text, or one Parse's when ``single``)."""
        state = self.holder.current
        if state.catalog is None:
            return Refuse("57P03", "pgveil has not loaded the database catalog yet; try again shortly")
        key = self._verdict_key(state, sql, single)
        known = self._verdicts.get(key)
        if known is not None:
            return known
        verdict, cacheable = self._judge(state, sql, transaction_status, single)
        if cacheable:
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def known(self, sql: str, single: bool) -> Forward | Refuse | AskDP | None:
        """The verdict ``judge`` has kept for ``sql`` under the current context, without judging (None: none kept)."""
        return self._verdicts.get(self._verdict_key(self.holder.current, sql, single))

    def _verdict_key(self, state: PolicyState, sql: str, single: bool) -> tuple:
        """Everything a kept verdict depends on: the text, the policy generation, the context, the validity epoch."""
        policies = state.policies
        return (sql, single, self.holder.generation, self.purpose, self.project,
                policies.epoch(time.time()) if policies._edges else 0)

    def _judge(self, state: PolicyState, sql: str, transaction_status: str, single: bool) -> tuple[Forward | Refuse | AskDP, bool]:
        """The verdict, and whether it may be reused for the same text (settings change state: never)."""
        verdicts = rewrite_statements(sql, self.context(state))
        if single and len(verdicts) > 1:
            return Refuse("42601", "cannot insert multiple commands into a prepared statement"), True
        if len(verdicts) == 1:  # the usual case, without the generic checks below
            v = verdicts[0]
            kind = type(v)
            if kind is Allow:
                return Forward(sql), True
            if kind is Rewritten:
                plan = v.plan
                if plan is not self._plan_lists[0]:  # a shape's template gives every statement the same plan
                    self._plan_lists = (plan, tuple(dict.fromkeys(plan.tables)), tuple(sorted(set(plan.policies))))
                return Forward(v.sql, self._plan_lists[1], self._plan_lists[2]), True
            if kind is Deny:
                return Refuse(v.sqlstate, v.message), True
        for v in verdicts:
            if isinstance(v, Deny):
                return Refuse(v.sqlstate, v.message), True
        if any(isinstance(v, DPRequest) for v in verdicts):
            if len(verdicts) > 1:
                return Refuse("0A000", "send a query on a differentially private table as a statement of its own"), True
            return AskDP(verdicts[0].plan), True
        settings = [v for v in verdicts if isinstance(v, ProxyHandled)]
        if settings:
            if len(verdicts) > 1:
                return Refuse("0A000", "send SET/SHOW of pgveil settings as a statement of its own"), True
            return self._setting(settings[0].setting, sql, transaction_status), False
        if len(verdicts) == 1 and isinstance(verdicts[0], Allow):
            return Forward(sql), True
        sqls, tables, policies = [], [], []
        for v in verdicts:
            sqls.append(v.sql)
            if isinstance(v, Rewritten):
                tables += v.plan.tables
                policies += v.plan.policies
        return Forward(";\n".join(sqls), tuple(dict.fromkeys(tables)), tuple(sorted(set(policies)))), True

    def _setting(self, setting, sql: str, transaction_status: str) -> Forward | Refuse:
        if setting.action == "show":
            return Forward(sql)  # the backend holds the value as a placeholder setting
        if setting.is_local or transaction_status != "I":
            return Refuse("25001", f"{setting.name} can only be changed outside a transaction block, with SET (not SET LOCAL)")
        value = setting.value if setting.action == "set" else None
        try:
            self.choose(setting.name, value)
        except ContextError as exc:
            return Refuse(exc.sqlstate, str(exc))
        return Forward(sql)  # mirror the choice in the backend's placeholder, so SHOW answers it
