"""Gate rules: the YAML model, its validation and loading (no I/O beyond reading files).

A rule file holds `variables` (defaults for query templates), optional `score` thresholds and a
list of `rules`. See docs/rules.md for the user-facing description of every field.

Over 450 lines on purpose: one model family whose cross-field checks (source against its
fields, comparison kind against criteria) name the file and line of the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gatekeeper.criteria import Criterion, parse_criterion
from gatekeeper.durations import parse_duration
from gatekeeper.jsonpaths import path_problem
from gatekeeper.templating import template_variables
from gatekeeper.yamlfiles import (
    ConfigFileError,
    LineMap,
    load_yaml_file,
    named_items,
    validation_problems,
)

SourceName = Literal["prometheus", "alertmanager", "probe", "logs", "loki", "kubernetes",
                     "validation"]
DriverName = Literal["load", "jobs", "mirroring"]
"""The validation drivers that post outcomes (gatekeeper.drivers): a typo is refused here,
never judged as a pair that "runs no such driver"."""
NoDataPolicy = Literal["unknown", "fail", "pass", "ignore"]
KubernetesCheck = Literal["pods_ready", "restarts", "config_parity", "images_differ"]
SeriesPolicy = Literal["single", "worst"]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as `30s`, `5m`, `2h` or a number."""
OptionalSeconds = Annotated[
    float | None, BeforeValidator(lambda value: None if value is None else parse_duration(value))]
"""Seconds as `Seconds`, or None (not given)."""
BUILTIN_VARIABLES = frozenset({"namespace", "namespaces", "window", "selector", "pair"})
_NAME = re.compile(r"^[a-z0-9]([a-z0-9_.-]*[a-z0-9])?$")


class _Strict(BaseModel):
    # NaN and infinity are no thresholds, weights or durations: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _criteria(values: Any) -> tuple[Criterion, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple):
        raise ValueError("criteria must be a string or a list of strings such as ['< 0.01']")
    return tuple(v if isinstance(v, Criterion) else parse_criterion(v) for v in values)


CriteriaList = Annotated[tuple[Criterion, ...], Field(default=())]


class StatisticalComparison(_Strict):
    """Mann-Whitney U comparison of the rule's range samples, dark against active."""

    test: Literal["mann_whitney"] = "mann_whitney"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    direction: Literal["increase", "decrease", "either"] = "increase"
    allowed_effect: float = Field(1.1, ge=1.0, description="allowed ratio of means")
    step: Seconds = Field(15.0, gt=0, description="seconds between range samples")
    min_samples: int = Field(10, ge=3)


_COUNTER_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
_METRIC_NAME = re.compile(r"^(\$\{[A-Za-z_][A-Za-z0-9_]*\}|[a-zA-Z_:][a-zA-Z0-9_:]*)+$")


class _CountComparison(_Strict):
    """What every count comparison (rate, latency) shares: allowed degradation and certainty."""

    allowed_ratio: float = Field(1.5, gt=1.0, description="dark / active rate tolerated")
    allowed_margin: float = Field(0.0, ge=0.0, lt=1.0,
                                  description="absolute rate difference that never fails")
    confidence: float = Field(0.99, gt=0.5, lt=1.0)
    detect: float = Field(5.0, gt=1.0, description="regression to be caught before a pass")
    power: float = Field(0.8, gt=0.0, lt=1.0)
    baseline_window: OptionalSeconds = Field(
        None, description="span of the active's counts; default: the dark's judged span")

    @model_validator(mode="after")
    def _detectable(self) -> _CountComparison:
        if self.detect <= self.allowed_ratio:
            raise ValueError(
                f"detect (x{self.detect:g}) must be above allowed_ratio "
                f"(x{self.allowed_ratio:g}): a regression inside the allowed degradation "
                "is never caught")
        return self


class RateComparison(_CountComparison):
    """Dark's bad events per event against the active's (sequential, anytime-valid)."""

    bad: str = Field(description="PromQL template: bad events per namespace over ${window}")
    total: str = Field(description="PromQL template: all events per namespace over ${window}")

    @field_validator("bad", "total")
    @classmethod
    def _counts_over_window(cls, value: str) -> str:
        try:
            used = template_variables(value)
        except ValueError:
            return value  # reported with its line by the template check
        if "window" not in used:
            raise ValueError("the query must count over ${window} (e.g. increase(...[${window}])): "
                             "the judged span is put there")
        return value


class LatencyComparison(_CountComparison):
    """Dark's latency histogram against the active's: share of requests slower than a
    bucket boundary near the pooled quantile, compared as a rate."""

    histogram: str = Field(description="histogram metric name, without _bucket")
    quantile: float = Field(0.99, gt=0.5, lt=1.0)
    matchers: str = Field("", description="extra PromQL label matchers, e.g. 'route!=\"/health\"'")

    @field_validator("histogram")
    @classmethod
    def _histogram(cls, value: str) -> str:
        if not _METRIC_NAME.match(value):
            raise ValueError(f"{value!r} is not a metric name (give the histogram's base name, "
                             "e.g. http_request_duration_seconds)")
        if value.endswith(_COUNTER_SUFFIXES):
            raise ValueError(
                f"{value!r} is not a histogram's base name: a latency comparison reads "
                "<name>_bucket, so give the name without _bucket/_count/_sum (a counter "
                "ending in _total is no histogram)")
        return value

    def bucket_query(self) -> str:
        """The PromQL template of the bucket increases over ${window}, per namespace and le."""
        extra = f", {self.matchers}" if self.matchers else ""
        return (f'sum by (namespace, le) (increase({self.histogram}_bucket'
                f'{{namespace=~"${{namespaces}}"{extra}}}[${{window}}]))')


class ProbeSpec(_Strict):
    """An HTTP check against a namespace's service (the seed's integration-test suite)."""

    url: str
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: int = Field(200, ge=100, le=599)
    expect_json: dict[str, Any] = Field(default_factory=dict)
    require_fields: tuple[str, ...] = ()
    timeout: Seconds = 5.0
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("expect_json", "require_fields")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        for path in value:
            if (problem := path_problem(path)) is not None:
                raise ValueError(problem)
        return value


class LogSpec(_Strict):
    """Which pod-log lines count as errors."""

    pattern: str = r"(?i)\b(error|exception)\b"
    exclude: tuple[str, ...] = ()
    container: str | None = None
    limit_bytes: int = Field(5_000_000, ge=1024, description="per container, per evaluation")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return values


# Loki runs Go's RE2: no lookaround, no backreferences. Refused here rather than by Loki at
# evaluation time, where the rule would only ever be `error`.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")
_STREAM_MATCHERS = re.compile(
    r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
    r'(,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*)*$')


class LokiSpec(_Strict):
    """Which Loki streams a `loki` rule reads (the line patterns come from `logs`)."""

    namespace_label: str = Field("namespace", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    stream: str = Field("", description='extra stream matchers, e.g. app="api-all"')

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str) -> str:
        if value.strip() and not _STREAM_MATCHERS.match(value):
            raise ValueError(f"invalid stream matchers {value!r}: write them as in a LogQL "
                             'selector without braces, e.g. app="api-all", container!="proxy"')
        return value


def re2_problem(pattern: str) -> str | None:
    """Why Loki (RE2) would refuse `pattern`, or None."""
    found = _NOT_RE2.search(pattern)
    if found is None:
        return None
    return (f"{found.group(0)!r} in {pattern!r} is not supported by Loki's regular "
            "expressions (RE2: no lookaround, no backreferences)")


class Rule(_Strict):
    """One gate rule; see docs/rules.md."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              allow_inf_nan=False)

    name: str
    description: str = ""
    source: SourceName
    query: str | None = None
    samples_query: str | None = None
    matchers: dict[str, str] = Field(default_factory=dict)
    probe: ProbeSpec | None = None
    logs: LogSpec | None = None
    loki: LokiSpec | None = None
    check: KubernetesCheck | None = None
    driver: DriverName | None = Field(
        None, description="source 'validation': which validation driver's outcome")
    pass_criteria: CriteriaList = Field(default=(), alias="pass")
    warning_criteria: CriteriaList = Field(default=(), alias="warning")
    compare: StatisticalComparison | None = None
    rate: RateComparison | None = None
    latency: LatencyComparison | None = None
    relative_floor: float | None = Field(
        None, description="relative criteria pass while the dark value is at or below this"
    )
    weight: float = Field(1.0, ge=0)
    key: bool = False
    no_data: NoDataPolicy = "unknown"
    min_samples: float = Field(0, ge=0)
    window: OptionalSeconds = None
    series: SeriesPolicy = Field(
        "single", description="several series for one namespace: an error, or judge the worst"
    )
    accept_partial: bool = Field(
        False, description="judge Prometheus answers that carry warnings (partial results)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"invalid rule name {value!r}: use lower-case letters, digits, '-', '_' or '.'"
            )
        return value

    @field_validator("pass_criteria", "warning_criteria", mode="before")
    @classmethod
    def _parse_criteria(cls, value: Any) -> tuple[Criterion, ...]:
        return _criteria(value)

    @model_validator(mode="after")
    def _source_fields(self) -> Rule:
        counts = self.count_comparison
        if (self.rate is not None) + (self.latency is not None) + (self.compare is not None) > 1:
            raise ValueError("a rule has at most one of 'rate', 'latency' and 'compare'")
        if counts is not None:
            if self.source != "prometheus":
                raise ValueError("'rate' and 'latency' comparisons work with source 'prometheus'")
            if self.query is not None or self.samples_query is not None:
                raise ValueError("a 'rate' or 'latency' rule has no 'query'/'samples_query': "
                                 "its counts come from its own section")
            if self.pass_criteria or self.warning_criteria or self.relative_floor is not None:
                raise ValueError("a 'rate' or 'latency' rule is judged by its test alone: "
                                 "put absolute limits (pass/warning) in a rule of their own")
            return self
        needs = {
            "prometheus": ("query",),
            "probe": ("probe",),
            "kubernetes": ("check",),
            "validation": ("driver",),
        }.get(self.source, ())
        for field_name in needs:
            if getattr(self, field_name) is None:
                raise ValueError(f"source '{self.source}' needs the field '{field_name}'")
        if self.driver is not None and self.source != "validation":
            raise ValueError("'driver' works with source 'validation'")
        if self.loki is not None and self.source != "loki":
            raise ValueError("'loki' (stream matchers) works with source 'loki'")
        if self.source == "loki" and self.logs is not None:
            for pattern in (self.logs.pattern, *self.logs.exclude):
                if (problem := re2_problem(pattern)) is not None:
                    raise ValueError(problem)
        if self.compare is not None and self.source != "prometheus":
            raise ValueError("'compare' (statistical comparison) works with source 'prometheus'")
        if not self.pass_criteria and self.compare is None:
            raise ValueError("a rule needs 'pass' criteria or a 'compare' section")
        if (self.series != "single" or self.accept_partial) and self.source != "prometheus":
            raise ValueError("'series' and 'accept_partial' work with source 'prometheus'")
        if self.series == "worst" and self.worst_is_highest is None:
            raise ValueError(
                "'series: worst' needs criteria that all bound the value from one side (all "
                "'<'/'<=' or all '>'/'>='; a compare section's direction 'increase' or "
                "'decrease'), so the worst series is the highest or the lowest")
        return self

    @property
    def worst_is_highest(self) -> bool | None:
        """True when a higher value is worse (upper bounds), False when lower is, else None."""
        sides = {c.op[0] for c in (*self.pass_criteria, *self.warning_criteria)}
        if self.compare is not None:
            sides.add({"increase": "<", "decrease": ">"}.get(self.compare.direction, "="))
        if sides == {"<"}:
            return True
        if sides == {">"}:
            return False
        return None

    @property
    def count_comparison(self) -> RateComparison | LatencyComparison | None:
        """The rule's sequential count comparison, if it is one."""
        return self.rate if self.rate is not None else self.latency

    @property
    def has_relative(self) -> bool:
        """True when some criterion needs the baseline namespace's value."""
        return any(c.is_relative for c in (*self.pass_criteria, *self.warning_criteria))


class ScoreThresholds(_Strict):
    """Total score thresholds in percent (Keptn's defaults: 90 pass, 75 warning)."""

    pass_: float = Field(90.0, alias="pass", ge=0, le=100)
    warning: float = Field(75.0, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self) -> ScoreThresholds:
        if self.warning > self.pass_:
            raise ValueError("score.warning must not be above score.pass")
        return self


class RuleFile(_Strict):
    """The content of one rule file."""

    variables: dict[str, str] = Field(default_factory=dict)
    score: ScoreThresholds | None = None
    rules: tuple[Rule, ...]

    @field_validator("variables", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # Numbers become text (`threshold: 5`); lists and mappings stay invalid.
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                    for k, v in value.items()}
        return value


class RuleSet(BaseModel):
    """Every rule gatekeeper evaluates, merged from one or more files."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    rules: tuple[Rule, ...]
    variables: dict[str, str] = Field(default_factory=dict)
    score: ScoreThresholds = Field(default_factory=lambda: ScoreThresholds())
    origins: dict[str, str] = Field(default_factory=dict, description="rule name -> file:line")
    warnings: tuple[str, ...] = Field(
        default=(), description="`file:line: warning: ...` lines: valid but likely wrong")

    def sources(self) -> set[str]:
        """The sources the rules need (the configuration must provide each)."""
        return {rule.source for rule in self.rules}


def parse_rule_file(data: Any, line_map: LineMap) -> RuleFile:
    """Validate parsed YAML as a rule file, or raise ConfigFileError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigFileError(
            [f"{line_map.file}:1: a rule file must be a mapping with a 'rules' list"]
        )
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        label = named_items(data, "rules", "rule")
        raise ConfigFileError(validation_problems(exc, line_map, label=label)) from exc
    problems = _check_templates(parsed, data, line_map)
    if problems:
        raise ConfigFileError(problems)
    return parsed


def _check_templates(parsed: RuleFile, data: Any, line_map: LineMap) -> list[str]:
    """Every `${variable}` in a query must be built in or defined in `variables`."""
    problems = []
    known = BUILTIN_VARIABLES | set(parsed.variables)
    for index, rule in enumerate(parsed.rules):
        templates: list[tuple[str, str | None]] = [
            ("query", rule.query), ("samples_query", rule.samples_query)]
        if rule.rate is not None:
            templates += [("rate.bad", rule.rate.bad), ("rate.total", rule.rate.total)]
        if rule.latency is not None:
            templates += [("latency.histogram", rule.latency.bucket_query())]
        for field_name, text in templates:
            if text is None:
                continue
            try:
                used = template_variables(text)
            except ValueError as exc:
                line = line_map.line_of(("rules", index, *field_name.split(".")))
                problems.append(f"{line_map.file}:{line}: rule '{rule.name}': field "
                                f"'rules[{index}].{field_name}': {exc}")
                continue
            for missing in sorted(used - known):
                line = line_map.line_of(("rules", index, *field_name.split(".")))
                problems.append(
                    f"{line_map.file}:{line}: rule '{rule.name}': field 'rules[{index}]."
                    f"{field_name}': unknown variable '${{{missing}}}' (define it under "
                    "'variables' or use one of: " + ", ".join(sorted(BUILTIN_VARIABLES)) + ")"
                )
    return problems


_BY_NAMESPACE = re.compile(r"\bby\s*\(\s*([^)]*)\)", re.IGNORECASE)


def aggregates_by_namespace(query: str) -> bool:
    """True when some `by (...)` clause of the query groups by `namespace`."""
    return any("namespace" in (label.strip() for label in labels.split(","))
               for labels in _BY_NAMESPACE.findall(query))


def query_warnings(parsed: RuleFile, line_map: LineMap) -> list[str]:
    """Prometheus queries without `by (namespace)`: several series per namespace likely."""
    warnings = []
    for index, rule in enumerate(parsed.rules):
        if rule.source != "prometheus":
            continue
        for field_name in ("query", "samples_query"):
            text = getattr(rule, field_name)
            if text is None or aggregates_by_namespace(text):
                continue
            line = line_map.line_of(("rules", index, field_name))
            then = ("the worst series is judged (series: worst)" if rule.series == "worst"
                    else "the rule is an error (or set `series: worst`)")
            warnings.append(
                f"{line_map.file}:{line}: warning: rule '{rule.name}': field "
                f"'rules[{index}].{field_name}': no `by (namespace)`: if Prometheus answers "
                f"several series for one namespace, {then}")
    return warnings


def rule_files_in(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories to their *.yaml / *.yml files, sorted; keep files as given."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"}))
        else:
            found.append(path)
    return found


def load_rule_set(paths: Sequence[str | Path]) -> RuleSet:
    """Load and merge rule files; every problem in every file is reported at once."""
    problems: list[str] = []
    rules: list[Rule] = []
    variables: dict[str, str] = {}
    score: ScoreThresholds | None = None
    origins: dict[str, str] = {}
    warnings: list[str] = []
    files = rule_files_in(paths)
    if not files:
        raise ConfigFileError([f"{', '.join(map(str, paths))}:1: no rule files found"])
    for file in files:
        try:
            data, line_map = load_yaml_file(file)
            parsed = parse_rule_file(data, line_map)
        except ConfigFileError as exc:
            problems.extend(exc.problems)
            continue
        warnings.extend(query_warnings(parsed, line_map))
        variables.update(parsed.variables)
        if parsed.score is not None:
            score = parsed.score
        for index, rule in enumerate(parsed.rules):
            where = f"{file}:{line_map.line_of(('rules', index))}"
            if rule.name in origins:
                problems.append(
                    f"{where}: rule '{rule.name}': field 'rules[{index}].name': duplicate rule "
                    f"name (first defined at {origins[rule.name]})"
                )
                continue
            origins[rule.name] = where
            rules.append(rule)
    if problems:
        raise ConfigFileError(problems)
    return RuleSet(
        rules=tuple(rules), variables=variables, score=score or ScoreThresholds(),
        origins=origins, warnings=tuple(warnings),
    )
