"""Pieces of the eval stage (`lorakit.eval.compare` runs them in order).

    prompts  what to ask: --prompts files and held-out conversations -> Prompt
    scores   persona and retention rules: keyword matching, keyword derivation
    judge    optional scoring by an OpenAI-compatible judge endpoint
    report   the self-contained report.html
"""
