"""The one generation core used by chat, serve, eval, replay and Run.chat.

engine          Engine: a base model plus named LoRA adapters; answers conversations
                (render, generate, split reasoning); batched, streamed generation; scoring
completion      one completion in progress, and the Chunks that carry its text out
decoding        sampling, detokenizing and stop strings
reasoning       the thinking setting; splitting <think> blocks from answers
token_logprobs  log-probabilities of given tokens (Engine.score, logprobs in serve)
"""
