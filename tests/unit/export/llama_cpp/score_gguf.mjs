// Teacher-forced scoring of a token sequence in llama.cpp (node-llama-cpp's prebuilt libllama), for
// lorakit's K-quant agreement tests: what llama.cpp's own kernels predict at each position.
// stdin: {"model": path, "tokens": [ids], "positions": [t...], "lora": [adapter GGUF paths]?}
// stdout: {"top1": [argmax after tokens[0..t]], "margin": [top-1 minus top-2 logit]} per position t
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const req = JSON.parse(readFileSync(0, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: req.model});
const lora = req.lora ? {adapters: req.lora.map((filePath) => ({filePath}))} : undefined;
const size = req.tokens.length + 8;
const context = await model.createContext({contextSize: size, batchSize: size, threads: 2, lora});
const sequence = context.getSequence();
const wanted = new Set(req.positions);
const input = req.tokens.map((token, t) => wanted.has(t)
  ? [token, {generateNext: {logits: {filter: {tokens: [], includeTop: 2}}}}] : token);
const results = await sequence.controlledEvaluate(input);
const top1 = [], margin = [];
for (const t of req.positions) {
  const [[best, first], [, second]] = Array.from(results[t].next.logits.entries());  // sorted, highest first
  top1.push(best);
  margin.push(first - second);
}
process.stdout.write(JSON.stringify({top1, margin}));
await context.dispose();
await model.dispose();
await llama.dispose();
