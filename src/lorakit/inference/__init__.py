"""The one generation core used by chat, serve and eval.

    engine     Engine: a base model plus named LoRA adapters; batched, streamed generation
    decoding   sampling, detokenizing and stop strings
    reasoning  splitting <think> blocks from answers
"""
