"""Label selectors as admission evaluates a webhook's namespaceSelector and objectSelector. Pure.

The apiserver validated these selectors when the configuration was stored, so a selector this
module cannot read is rare (a newer operator, a hand-edited etcd); it is kept as *unreadable*
and treated as "may match", never as "does not match": a guard must not wave a write through
because it failed to understand the rule that would stop it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class SelectorError(ValueError):
    """A selector in a shape the apiserver would not have admitted; the message names the field."""


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.IN:
            return labels.get(self.key) in self.values
        if self.operator is Operator.NOT_IN:
            # As in apimachinery: a missing label is "not in" any set.
            return labels.get(self.key) not in self.values
        if self.operator is Operator.EXISTS:
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """matchLabels and matchExpressions, all of which must hold (an empty selector matches all)."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def matches_everything(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def describe(self) -> str:
        """The selector in kubectl's ``-l`` syntax, for messages (names and values only)."""
        parts = []
        for requirement in self.requirements:
            values = ",".join(sorted(requirement.values))
            if requirement.operator is Operator.EXISTS:
                parts.append(requirement.key)
            elif requirement.operator is Operator.DOES_NOT_EXIST:
                parts.append(f"!{requirement.key}")
            elif requirement.operator is Operator.IN and len(requirement.values) == 1:
                parts.append(f"{requirement.key}={values}")
            else:
                word = "in" if requirement.operator is Operator.IN else "notin"
                parts.append(f"{requirement.key} {word} ({values})")
        return ", ".join(parts) or "(everything)"


def parse_selector(document: object, field: str) -> LabelSelector:
    """A ``metav1.LabelSelector`` document; absent (None) means everything, as in admission."""
    if document is None:
        return LabelSelector()
    if not isinstance(document, Mapping):
        raise SelectorError(f"{field}: must be an object, got {type(document).__name__}")
    requirements: list[Requirement] = []
    match_labels = document.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"{field}.matchLabels: must be an object of label values")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise SelectorError(f"{field}.matchLabels.{key}: must be a string")
        requirements.append(Requirement(str(key), Operator.IN, frozenset({value})))
    expressions = document.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError(f"{field}.matchExpressions: must be a list")
    for index, expression in enumerate(expressions):
        requirements.append(_requirement(expression, f"{field}.matchExpressions[{index}]"))
    return LabelSelector(tuple(requirements))


def _requirement(expression: object, field: str) -> Requirement:
    if not isinstance(expression, Mapping):
        raise SelectorError(f"{field}: must be an object with key, operator and values")
    key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{field}.key: must be a label key")
    if not isinstance(operator, str) or operator not in Operator._value2member_map_:
        allowed = ", ".join(o.value for o in Operator)
        raise SelectorError(f"{field}.operator: {str(operator)[:40]!r} is not one of {allowed}")
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise SelectorError(f"{field}.values: must be a list of strings")
    chosen = Operator(operator)
    needs_values = chosen in (Operator.IN, Operator.NOT_IN)
    if needs_values != bool(values):
        raise SelectorError(
            f"{field}.values: {chosen.value} needs {'a non-empty' if needs_values else 'no'} list of values"
        )
    return Requirement(key, chosen, frozenset(values))
