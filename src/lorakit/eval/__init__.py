"""The eval stage: phases that return data (`lorakit.eval.compare.evaluate` composes them in order).

    inputs      the run and every user file, read and checked before torch is imported
    heldout     held-out samples and the loss of both models on them
    answers     both models' answers (through Engine.answer_batch), memoised
    prompts     what to ask: --prompts files and held-out conversations -> Prompt
    scores      persona and retention rules: keyword matching, keyword derivation
    judge       optional scoring by an OpenAI-compatible judge endpoint
    tradeoff    the demo job's measured persona/retention levers (assets/demo/levers.json): chart, advice
    summary     the headline numbers and how they are written (report.html and the terminal)
    report      the self-contained report.html
    benchmarks  lm-evaluation-harness tasks on both models (harness: the lm-eval model class)

The terminal tables are the CLI's: lorakit.cli.eval.
"""
