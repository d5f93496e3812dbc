"""The pure decisions: settings + facts -> the plan (vLLM command, layout, truncation), with a reason per flag."""
