"""Evaluates Rego policies with an independent implementation (regopy, rego-cpp) for the
cross-check in policies.rs.

usage: regopy_check.py CASES.json  (a list of {policy, input, query}); prints `ANSWERS ` and a list
of {result, deny}: the query's value (null when undefined) and data.stella.deny's messages.
"""
import json
import sys

import regopy


def value(interp, query):
    out = str(interp.query("x = " + query))
    if out.strip() == "undefined":
        return None
    return json.loads(out)["bindings"]["x"]


answers = []
for case in json.load(open(sys.argv[1])):
    interp = regopy.Interpreter()
    try:
        interp.add_module("policy.rego", case["policy"])
        interp.set_input_term(json.dumps(case["input"]))
        deny = value(interp, "data.stella.deny")
    except Exception as e:  # the Rust side names the case
        answers.append({"error": str(e)})
        continue
    messages = []
    for m in deny if isinstance(deny, list) else ([] if deny is None else [deny]):
        messages.append(m if isinstance(m, str) else json.dumps(m, separators=(",", ":")))
    answers.append({"result": value(interp, case["query"]), "deny": sorted(messages)})
print("ANSWERS " + json.dumps(answers))
