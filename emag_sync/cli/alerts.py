"""The alerts `emag-sync setup-prefect` registers: Prefect automations on the runs of prefect.yaml's
deployments, sending to one notification block (a webhook it creates, or any block the user names).

Prefect's server evaluates them and sends the notifications; nothing here runs after set-up.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from emag_sync.accounts import Account
from emag_sync.errors import ConfigError
from emag_sync.redact import redact_target_url
from tasks.alerts import ACCOUNT_SYNCED_EVENT, DQ_WARNING_EVENT, DQ_WARNING_RESOURCE, account_resource_id

ALERTS_BLOCK_NAME = "emag-sync-alerts"
# The webhook receives {"subject": ..., "body": ...}; the URL itself is kept among the block's secrets
# (obfuscated in the UI and API), because webhook URLs usually carry their token.
WEBHOOK_URL_SECRET = "webhook_url"
WEBHOOK_JSON = {"subject": "{{subject}}", "body": "{{body}}"}

DEFAULT_STUCK_AFTER = timedelta(minutes=30)
# Prefect refuses a proactive trigger whose window is shorter than 10 s.
MIN_WINDOW = timedelta(seconds=10)
# An account's silence window is the longest gap of the most frequent schedule that syncs it plus a grace:
# the gap again, at most this much (every 2 hours: 4 h; daily: 26 h). The grace also covers a run's own
# duration and DST shifts.
MAX_SILENCE_GRACE = timedelta(hours=2)
# Cron gaps are measured on the wall clock over a fixed year, so the window never depends on the day
# set-up runs (a second run must say "unchanged").
_GAP_REFERENCE = datetime(2026, 1, 5, tzinfo=UTC)

EMAG_TAG = "emag"
SYNC_TAG = "sync"
FAILED_EVENTS = frozenset(
    {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
)
FINISHED_EVENTS = FAILED_EVENTS | {"prefect.flow-run.Completed", "prefect.flow-run.Cancelled"}
COMPLETED_EVENT = "prefect.flow-run.Completed"
RUNNING_EVENT = "prefect.flow-run.Running"
ANY_FLOW_RUN = {"prefect.resource.id": "prefect.flow-run.*"}

# External text (state messages carry eMAG's messages and SKUs) is data: the notification may be shown
# by Slack (mrkdwn), Teams or an HTML e-mail, and Prefect's Jinja does not autoescape. Escaping & < >
# is what Slack asks for and keeps HTML inert; quotes are left as they are, which Slack would show as
# entities. Each value is cut to a bounded length before it is escaped. Every template starts with the
# macro, so the templates stay readable in the UI.
MAX_TEXT_CHARS = 600
_PLAIN_MACRO = (
    "{%- macro plain(value) -%}"
    f"{{{{ (value | string | truncate({MAX_TEXT_CHARS}, True))"
    " | replace('&', '&amp;') | replace('<', '&lt;') | replace('>', '&gt;') }}"
    "{%- endmacro -%}"
)


def text(expression: str) -> str:
    """A Jinja placeholder that renders ``expression`` as bounded, escaped text (see ``template``)."""
    return f"{{{{ plain({expression}) }}}}"


def template(source: str) -> str:
    """A notification template: ``source`` with the ``plain`` macro that ``text`` placeholders call."""
    return _PLAIN_MACRO + source


@dataclass(frozen=True)
class AlertOptions:
    """Where alerts go and their windows; validated before anything on the server changes."""

    notify_webhook: str | None = None
    notify_block: str | None = None
    silence: timedelta | None = None  # None: derived from the schedules that sync each account
    stuck_after: timedelta = DEFAULT_STUCK_AFTER

    def __post_init__(self) -> None:
        if self.notify_webhook and self.notify_block:
            raise ConfigError("give --notify-webhook or --notify-block, not both")
        if self.notify_webhook is not None:
            parts = urlsplit(self.notify_webhook)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"--notify-webhook must be an http(s) URL, got {redact_target_url(self.notify_webhook)!r}"
                )
        for option, window in (("--silence-hours", self.silence), ("--stuck-minutes", self.stuck_after)):
            if window is not None and window < MIN_WINDOW:
                raise ConfigError(
                    f"{option} must be at least {MIN_WINDOW.total_seconds():.0f} s, Prefect's shortest window"
                )

    @property
    def has_target(self) -> bool:
        return bool(self.notify_webhook or self.notify_block)


def duration(window: timedelta) -> str:
    """``26 h``, ``30 min``, ``12 s``: how a window reads in messages."""
    seconds = window.total_seconds()
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 60:.1f} min" if seconds >= 600 else f"{seconds:g} s"


# --- windows from prefect.yaml ---------------------------------------------------------------------


def schedule_gap(crons: Iterable[str]) -> timedelta | None:
    """The longest wall-clock gap between two consecutive runs of these cron schedules (None: none)."""
    from prefect.server.schemas.schedules import CronSchedule
    from prefect.utilities.asyncutils import run_coro_as_sync

    dates: list[datetime] = []
    for cron in crons:
        schedule = CronSchedule(cron=cron, timezone="UTC")
        end = _GAP_REFERENCE + timedelta(days=366)
        dates += run_coro_as_sync(schedule.get_dates(start=_GAP_REFERENCE, end=end)) or []
    dates = sorted(set(dates))
    if len(dates) < 2:
        return None
    return timedelta(seconds=max((b - a).total_seconds() for a, b in itertools.pairwise(dates)))


def silence_window(gap: timedelta) -> timedelta:
    """How long an account may go without a sync: its schedule's gap plus min(gap, 2 h)."""
    return gap + min(gap, MAX_SILENCE_GRACE)


def selected_accounts(selection: str, accounts: Sequence[Account], seller: str | None = None) -> list[str]:
    """The names of ``accounts`` a deployment's ``accounts`` parameter selects (``all``, ``both``, names),
    as its run would; names that are not among them are left out (its runs fail on them, and say so)."""
    names = [account.name for account in accounts if seller is None or (account.seller or "") == seller]
    chosen: list[str] = []
    for word in (part.strip().lower() for part in selection.split(",") if part.strip()):
        found = sorted(names) if word == "all" else ["main", "fbe"] if word == "both" else [word]
        chosen += [name for name in found if name in names and name not in chosen]
    return chosen


@dataclass(frozen=True)
class Watched:
    """What the automations watch, from prefect.yaml: every emag deployment; sync ones with their gap and
    the accounts they sync (their ``accounts`` and ``seller`` parameters)."""

    deployments: list[str]
    sync_gaps: dict[str, timedelta | None]
    selections: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @classmethod
    def from_specs(cls, specs: Sequence[Mapping[str, Any]]) -> Watched:
        sync = [s for s in specs if SYNC_TAG in (s.get("tags") or [])]
        return cls(
            deployments=[s["name"] for s in specs if EMAG_TAG in (s.get("tags") or [])],
            sync_gaps={
                s["name"]: schedule_gap(c["cron"] for c in s.get("schedules") or [] if "cron" in c)
                for s in sync
            },
            selections={
                # the flow's defaults when the deployment does not set them
                s["name"]: (str(parameters.get("accounts") or "both"), parameters.get("seller"))
                for s in sync
                for parameters in [s.get("parameters") or {}]
            },
        )

    def account_gaps(self, accounts: Sequence[Account]) -> dict[str, timedelta]:
        """Each account's shortest schedule gap among the scheduled sync deployments that sync it."""
        gaps: dict[str, timedelta] = {}
        for name, gap in self.sync_gaps.items():
            if gap is None:
                continue  # no schedule: nobody expects it to run
            selection, seller = self.selections.get(name, ("both", None))
            for account in selected_accounts(selection, accounts, seller):
                gaps[account] = min(gaps.get(account, gap), gap)
        return dict(sorted(gaps.items()))


# --- the automations -------------------------------------------------------------------------------


def _tag(name: str) -> dict[str, str]:
    return {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{name}"}


def _deployments(names: Sequence[str]) -> dict[str, str | list[str]]:
    return {"prefect.resource.role": "deployment", "prefect.resource.name": list(names)}


def _run_link(ui_url: str | None) -> str:
    """The flow run's page; the base URL is baked in because the server renders ``ui_url`` as None
    unless it was started with PREFECT_UI_URL."""
    if ui_url:
        return f"{ui_url.rstrip('/')}/runs/flow-run/{{{{ flow_run.id }}}}"
    return "{{ flow_run | ui_url }}"


_DEPLOYMENT = text("flow.name") + "/" + text("deployment.name")
_ACCOUNTS = text("flow_run.parameters.accounts or flow_run.parameters.account or 'see the cause'")
_OCCURRED = text("event.occurred.strftime('%Y-%m-%d %H:%M:%S UTC')")
_ACCOUNT = text("event.resource.name")
# Silence automations are named by their window; set-up deletes those whose window no longer exists, and
# the per-deployment silence automations of earlier versions ("emag-sync: sync-fbe silent").
SILENCE_PREFIX = "emag-sync: accounts silent for "
_OLD_SILENCE = re.compile(r"^emag-sync: [A-Za-z0-9_-]+ silent$")
MAX_LISTED_ACCOUNTS = 10


def silence_alert_name(window: timedelta) -> str:
    """``emag-sync: accounts silent for 26 h``."""
    return f"{SILENCE_PREFIX}{duration(window)}"


def _listed(names: Sequence[str]) -> str:
    """``main, fbe`` or, for many, ``a, b, ... (+N more)``: how a description names the accounts."""
    shown = ", ".join(names[:MAX_LISTED_ACCOUNTS])
    return (
        f"{shown} (+{len(names) - MAX_LISTED_ACCOUNTS} more)" if len(names) > MAX_LISTED_ACCOUNTS else shown
    )


@dataclass(frozen=True)
class Alert:
    """One automation as set-up prints it: its name and what it watches (also its description)."""

    name: str
    watches: str
    automation: Any  # prefect.automations.AutomationCore


def alert_definitions(
    block_id: UUID,
    watched: Watched,
    ui_url: str | None,
    *,
    accounts: Sequence[Account] = (),
    silence: timedelta | None = None,
    stuck_after: timedelta = DEFAULT_STUCK_AFTER,
) -> list[Alert]:
    """Failure, silence (per account, one automation per window), stuck and data-quality warning alerts.

    ``accounts``: those the silence alerts watch (the enabled ones); each one's window is ``silence``, or
    derived from the schedules of the sync deployments that sync it (an account none syncs has none).
    """
    from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification

    link = _run_link(ui_url)
    sync_names = list(watched.sync_gaps)

    def alert(name: str, watches: str, trigger: EventTrigger, subject: str, body: str) -> Alert:
        action = SendNotification(block_document_id=block_id, subject=template(subject), body=template(body))
        core = AutomationCore(name=name, description=watches, trigger=trigger, actions=[action])
        return Alert(name, watches, core)

    alerts = [
        alert(
            "emag-sync: run failed",
            "a run of an emag deployment ends Failed, Crashed or TimedOut: one notification per run",
            EventTrigger(
                posture=Posture.Reactive,
                expect=set(FAILED_EVENTS),
                match=ANY_FLOW_RUN,
                match_related=[_tag(EMAG_TAG), _deployments(watched.deployments)],
                threshold=1,
                within=timedelta(0),
            ),
            "emag-sync: " + text("deployment.name") + " " + text("flow_run.state.name"),
            f"Run {text('flow_run.name')} of {_DEPLOYMENT} ended {text('flow_run.state.name')}.\n"
            f"Accounts: {_ACCOUNTS}\n"
            f"Cause: {text('flow_run.state.message or flow_run.state.name')}\n"
            f"Run: {link}",
        )
    ]
    gaps = watched.account_gaps(accounts)
    windows = (
        {account.name: silence for account in accounts}
        if silence is not None
        else {name: silence_window(gap) for name, gap in gaps.items()}
    )
    for window in sorted(set(windows.values())):
        names = sorted(name for name, each in windows.items() if each == window)
        gap = None if silence is not None else gaps[names[0]]  # one window, one gap
        every = f", scheduled every {duration(gap)}" if gap else ""
        alerts.append(
            alert(
                silence_alert_name(window),
                f"{_listed(names)} not synced within {duration(window)} of its last sync{every}: "
                "one notification per account",
                EventTrigger(
                    posture=Posture.Proactive,
                    after={ACCOUNT_SYNCED_EVENT},
                    expect={ACCOUNT_SYNCED_EVENT},
                    # One silence clock per account: the server keeps a bucket per resource (account).
                    for_each={"prefect.resource.id"},
                    match={"prefect.resource.id": [account_resource_id(name) for name in names]},
                    threshold=1,
                    within=window,
                ),
                f"emag-sync: account {_ACCOUNT} not synced in {duration(window)}",
                f"Account {_ACCOUNT} has not synced within {duration(window)}{every}.\n"
                f"Last synced: {_OCCURRED} (sync run {text('event.payload.sync_run_id')}, "
                f"{text('flow.name')}/{text('deployment.name')} run {text('flow_run.name')}: {link})\n"
                "Check that the schedules that sync it are active, that the worker (or `emag-sync serve`) is "
                "running, and whether its syncs fail (a failed run or data-quality check is alerted apart).",
            )
        )
    alerts += [
        alert(
            "emag-sync: sync run stuck",
            f"a run of {', '.join(sync_names)} is still running {duration(stuck_after)} after it started",
            EventTrigger(
                posture=Posture.Proactive,
                after={RUNNING_EVENT},
                expect=set(FINISHED_EVENTS),
                for_each={"prefect.resource.id"},
                match=ANY_FLOW_RUN,
                match_related=[_tag(EMAG_TAG), _deployments(sync_names)],
                threshold=1,
                within=stuck_after,
            ),
            "emag-sync: " + text("deployment.name") + f" still running after {duration(stuck_after)}",
            f"Run {text('flow_run.name')} of {_DEPLOYMENT} has been running since {_OCCURRED}, "
            f"longer than {duration(stuck_after)}.\n"
            f"Accounts: {_ACCOUNTS}\n"
            "It may be waiting for another sync of the same account, slowed by eMAG (429s, a larger "
            "catalogue), or its worker may have died.\n"
            f"Run: {link}",
        ),
        alert(
            "emag-sync: data-quality warnings",
            "a run's non-critical data-quality expectations fail: one warning per run",
            EventTrigger(
                posture=Posture.Reactive,
                expect={DQ_WARNING_EVENT},
                match={"prefect.resource.id": f"{DQ_WARNING_RESOURCE}.*"},
                match_related=[_tag(EMAG_TAG), _deployments(watched.deployments)],
                threshold=1,
                within=timedelta(0),
            ),
            "emag-sync WARNING: data-quality warnings in " + text("deployment.name"),
            f"WARNING (non-critical): data-quality expectations failed in run {text('flow_run.name')} "
            f"of {_DEPLOYMENT}.\n"
            "{% for warning in event.payload.warnings %}- " + text("warning") + "\n{% endfor %}"
            f"Run: {link} (its Artifacts tab has the full report)",
        ),
    ]
    return alerts


# --- notification blocks ---------------------------------------------------------------------------


def _webhook_block(url: str) -> tuple[UUID, str]:
    """Create or update the CustomWebhookNotificationBlock ``emag-sync-alerts`` posting to ``url``."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.utilities.asyncutils import run_coro_as_sync

    wanted = CustomWebhookNotificationBlock(
        name="emag-sync",
        url=f"{{{{{WEBHOOK_URL_SECRET}}}}}",
        method="POST",
        json_data=WEBHOOK_JSON,
        secrets={WEBHOOK_URL_SECRET: url},
    )
    label = f"notification block {ALERTS_BLOCK_NAME} (custom-webhook, POST {redact_target_url(url)})"
    try:
        existing = run_coro_as_sync(CustomWebhookNotificationBlock.aload(ALERTS_BLOCK_NAME))
    except ValueError:
        existing = None
    if existing is not None and _webhook_fields(existing) == _webhook_fields(wanted):
        return existing._block_document_id, f"{label}: unchanged"
    block_id = run_coro_as_sync(wanted.asave(ALERTS_BLOCK_NAME, overwrite=True))
    return block_id, f"{label}: {'updated' if existing is not None else 'created'}"


def _webhook_fields(block: Any) -> tuple[Any, ...]:
    return block.url, block.method, block.json_data, block.secrets.get_secret_value()


def _named_block(client: Any, name: str) -> tuple[UUID, str]:
    """The notification block the user named (``NAME``, or ``TYPE-SLUG/NAME`` when names repeat)."""
    slug, _, block_name = name.rpartition("/")
    found: list[Any] = []
    while page := client.read_block_documents(offset=len(found), include_secrets=False):
        found += page
    named = [
        d
        for d in found
        if d.name == block_name and not d.is_anonymous and (not slug or d.block_type.slug == slug)
    ]
    notifying = [d for d in named if "notify" in (d.block_schema.capabilities if d.block_schema else [])]
    if not named:
        raise ConfigError(
            f"no block named {name!r} on the Prefect server: create a notification block (Slack Webhook, "
            "Microsoft Teams Webhook, Email Server Credentials, ...) in the UI under Blocks, or use "
            "--notify-webhook URL"
        )
    if not notifying:
        kinds = ", ".join(sorted({d.block_type.slug for d in named if d.block_type}))
        raise ConfigError(f"block {name!r} is a {kinds} block, not a notification block")
    if len(notifying) > 1:
        kinds = ", ".join(sorted(f"{d.block_type.slug}/{d.name}" for d in notifying if d.block_type))
        raise ConfigError(f"several notification blocks are named {name!r} ({kinds}): give TYPE/NAME")
    block = notifying[0]
    kind = block.block_type.slug if block.block_type else "notification"
    return block.id, f"notification block {block.name} ({kind}): exists"


# --- set-up ----------------------------------------------------------------------------------------

# Trigger fields that are sets: their order follows the hash seed, so they are sorted before comparing.
_SET_FIELDS = ("after", "expect", "for_each")


def _comparable(automation: Any) -> dict[str, Any]:
    """What set-up owns of an automation; ``enabled`` stays the operator's (pausing in the UI sticks)."""
    dumped: dict[str, Any] = automation.model_dump(
        mode="json", include={"name", "description", "tags", "trigger", "actions"}
    )
    for name in _SET_FIELDS:
        dumped["trigger"][name] = sorted(dumped["trigger"].get(name) or [])
    return dumped


def _upsert(client: Any, alert: Alert) -> str:
    from prefect.automations import AutomationCore

    label = f'automation "{alert.name}"'
    existing = client.read_automations_by_name(alert.name)
    if not existing:
        client.create_automation(alert.automation)
        return f"{label}: created ({alert.watches})"
    current, *duplicates = existing
    for duplicate in duplicates:  # two set-ups at once; one automation per name is what the lines say
        client.delete_automation(duplicate.id)
    wanted, have = _comparable(alert.automation), _comparable(current)
    if wanted == have and not duplicates:
        return f"{label}: unchanged ({alert.watches})"
    changed = ", ".join(key for key in wanted if wanted[key] != have.get(key)) or "duplicates removed"
    # update_automation sends only the fields that were set: rebuild the model with every field set.
    every_field = alert.automation.model_dump(exclude={"owner_resource", "enabled"})
    client.update_automation(current.id, AutomationCore(**every_field, enabled=current.enabled))
    return f"{label}: updated {changed} ({alert.watches})"


def _delete_stale_silences(client: Any, wanted: Sequence[Alert]) -> list[str]:
    """Delete the silence automations set-up no longer wants: a window no account has any more, and the
    per-deployment ones of earlier versions (silence is per account now)."""
    names = {alert.name for alert in wanted}
    done = []
    for automation in client.read_automations():
        ours = automation.name.startswith(SILENCE_PREFIX) or _OLD_SILENCE.match(automation.name)
        if ours and automation.name not in names:
            client.delete_automation(automation.id)
            done.append(f'automation "{automation.name}": deleted (no account has that silence window now)')
    return done


def register_alerts(
    options: AlertOptions, specs: Sequence[Mapping[str, Any]], accounts: Sequence[Account] = ()
) -> list[str]:
    """Create or update the notification block and the automations, and delete silence automations no
    longer wanted; one line per object. ``accounts``: the enabled ones, whose silence is watched."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    if not options.has_target:
        return [
            "automations: skipped, no notification target; add them with "
            "`emag-sync setup-prefect --notify-webhook URL` or `--notify-block NAME`"
        ]
    watched = Watched.from_specs(specs)
    with get_client(sync_client=True) as client:
        if options.notify_webhook:
            block_id, line = _webhook_block(options.notify_webhook)
        else:
            block_id, line = _named_block(client, options.notify_block or "")
        done = [line]
        ui_url = get_current_settings().ui_url
        alerts = alert_definitions(
            block_id,
            watched,
            ui_url,
            accounts=accounts,
            silence=options.silence,
            stuck_after=options.stuck_after,
        )
        done += [_upsert(client, alert) for alert in alerts]
        done += _delete_stale_silences(client, alerts)
    return done
