// Run a GGUF in llama.cpp (node-llama-cpp's prebuilt libllama) for lorakit's export tests.
// stdin: {"model": path, "prompt": text, "max_tokens": n, "messages": [...], "lora": [adapter GGUF paths]?}
// stdout: {"prompt_tokens": llama.cpp's tokenization of prompt, "tokens": greedy continuation (stops at
//          end-of-generation), "template": the chat template llama.cpp read, "rendered": it rendered}
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import {Template} from "@huggingface/jinja";

const req = JSON.parse(readFileSync(0, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: req.model});
const lora = req.lora ? {adapters: req.lora.map((filePath) => ({filePath}))} : undefined;
const context = await model.createContext({contextSize: 512, threads: 2, lora});
const sequence = context.getSequence();

const promptTokens = Array.from(model.tokenize(req.prompt, true));
const tokens = [];
if (req.max_tokens > 0) {
  for await (const token of sequence.evaluate(promptTokens, {temperature: 0})) {
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
process.stdout.write(JSON.stringify({prompt_tokens: promptTokens, tokens, template, rendered}));
await context.dispose();
await model.dispose();
await llama.dispose();
