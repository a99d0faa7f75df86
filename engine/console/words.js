// Rules in plain words: how fields and operators read to the people using the console. The segment
// detail reads a saved rule and a member's explanation as sentences; the builder offers the same words
// in its pickers, where an operator is chosen before its value exists.

/** Operators as they read in a sentence, before the value: "Source is one of ads, webinar". */
export const OPERATOR_WORDS = {
  "=": "is", "!=": "is not", "<": "is less than", ">": "is greater than", "<=": "is at most", ">=": "is at least",
  between: "is between", notBetween: "is not between", in: "is one of", notIn: "is none of",
  contains: "contains", doesNotContain: "does not contain", beginsWith: "begins with",
  doesNotBeginWith: "does not begin with", endsWith: "ends with", doesNotEndWith: "does not end with",
  hasAny: "has any of", hasAll: "has all of", hasNone: "has none of", null: "is empty", notNull: "is not empty",
  before: "is before", after: "is after", withinLast: "is within the last", moreThanAgo: "is more than",
  withinNext: "is within the next", memberOf: "is in the segment", notMemberOf: "is not in the segment",
};
// In the builder's picker "ago" comes after the value, so the choice shows where it goes; the segment
// picker stands before a segment's name.
const PICKER_WORDS = { moreThanAgo: "is more than … ago", memberOf: "is in segment", notMemberOf: "is not in segment" };
// The builder picks dates as days (UTC): comparisons read as days, not instants.
const DATE_WORDS = { "=": "is exactly", "!=": "is not exactly", "<": "is before", ">": "is after", "<=": "is at or before", ">=": "is at or after" };

/** An operator in a sentence; its own name when it has no words yet. */
export function operatorWords(op) {
  return OPERATOR_WORDS[op] || op;
}

/** An operator as the builder offers it for a field of `type`. */
export function operatorChoice(op, type) {
  return (type === "datetime" && DATE_WORDS[op]) || PICKER_WORDS[op] || operatorWords(op);
}

/** "first_name" -> "First name", "custom.plan" -> "Plan (custom)". */
export function fieldLabel(name) {
  const custom = name.startsWith("custom.");
  const words = (custom ? name.slice(7) : name).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1) + (custom ? " (custom)" : "");
}
