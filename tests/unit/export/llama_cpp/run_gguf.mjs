// Run GGUFs in llama.cpp (node-llama-cpp's prebuilt libllama) for lorakit's export tests.
// stdin: {"model": path, "prompt": text, "max_tokens": n, "messages": [...], "top_probs": k (optional)}, or a
//        list of them (one node start, one llama.cpp load, for many models)
// stdout: per request {"prompt_tokens": llama.cpp's tokenization of prompt, "tokens": greedy continuation
//          (stops at end-of-generation), "template": the chat template llama.cpp read, "rendered": it
//          rendered, with top_probs: "top_probs": per generated step, the k likeliest [token, probability]
//          of llama.cpp's full softmax}; a list when the request was a list
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import {Template} from "@huggingface/jinja";

async function run(llama, req) {
  const model = await llama.loadModel({modelPath: req.model});
  const context = await model.createContext({contextSize: 512, threads: 2});
  const sequence = context.getSequence();

  const promptTokens = Array.from(model.tokenize(req.prompt, true));
  const tokens = [], topProbs = [];
  const k = req.top_probs ?? 0;
  if (req.max_tokens > 0) {
    // greedy; with temperature 0 the probabilities reported are the plain softmax of the logits
    const steps = sequence.evaluateWithMetadata(promptTokens, {probabilities: k > 0}, {temperature: 0});
    for await (const {token, probabilities} of steps) {
      if (k > 0) topProbs.push([...probabilities.entries()].sort((a, b) => b[1] - a[1]).slice(0, k));
      if (model.isEogToken(token)) break;
      tokens.push(token);
      if (tokens.length >= req.max_tokens) break;
    }
  }
  const template = model.fileInfo.metadata.tokenizer.chat_template ?? null;
  const rendered = template === null ? null : new Template(template).render({
    messages: req.messages, add_generation_prompt: true, enable_thinking: false,
    bos_token: "", eos_token: "",
  });
  await context.dispose();
  await model.dispose();
  return {prompt_tokens: promptTokens, tokens, template, rendered, ...(k > 0 ? {top_probs: topProbs} : {})};
}

const req = JSON.parse(readFileSync(0, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const results = [];
for (const one of Array.isArray(req) ? req : [req]) results.push(await run(llama, one));
process.stdout.write(JSON.stringify(Array.isArray(req) ? results : results[0]));
await llama.dispose();
