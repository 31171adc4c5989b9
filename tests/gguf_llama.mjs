// gguf_llama.mjs -- load a GGUF with llama.cpp (the prebuilt CPU binaries of node-llama-cpp), tokenize, run greedily.
// Prints JSON: the prompt's token ids and, per step, the greedy token and every token's probability.
//
// Usage: node gguf_llama.mjs NODE_MODULES_DIR MODEL.gguf PROMPT STEPS [nommap]
// nommap: llama.cpp reads the file (--no-mmap) instead of mapping it; over FUSE
// that is one large read per tensor instead of a page fault per 128 KiB.
// The probabilities are the softmax of the logits (temperature 1, no top-k
// or top-p cut), so they compare with a forward pass done elsewhere.
import path from "node:path";
import { pathToFileURL } from "node:url";

const [modules, modelPath, prompt, stepsText, mmapText] = process.argv.slice(2);
const steps = Number(stepsText);
const { getLlama, LlamaLogLevel } = await import(
    pathToFileURL(path.join(modules, "node-llama-cpp", "dist", "index.js")).href);

// build "never": use the prebuilt binaries or fail, never compile.
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: mmapText !== "nommap" });
const ctx = await model.createContext({ contextSize: 128, batchSize: 128, threads: 1 });
const seq = ctx.getSequence();

// llama.cpp decides from the GGUF (tokenizer.ggml.add_bos_token and its defaults) whether a BOS goes first.
let ids = model.tokenize(prompt);
if (model.tokens.shouldPrependBosToken && model.tokens.bos != null && ids[0] !== model.tokens.bos)
    ids = [model.tokens.bos, ...ids];

const out = { prompt_ids: Array.from(ids, Number), steps: [] };
const gen = seq.evaluateWithMetadata(ids, { probabilities: true },
    { temperature: 1, topK: 0, topP: 1, minP: 0, yieldEogToken: true });
let r = await gen.next();
while (!r.done && out.steps.length < steps) {
    const { token, probabilities } = r.value;
    out.steps.push({ token: Number(token), probs: Array.from(probabilities, ([t, p]) => [Number(t), p]) });
    // Feed the most probable token back: greedy, whatever was sampled.
    const best = probabilities.entries().next().value[0];
    out.steps[out.steps.length - 1].token = Number(best);
    r = await gen.next(best);
}
await gen.return();
process.stdout.write(JSON.stringify(out) + "\n");
await ctx.dispose();
await model.dispose();
await llama.dispose();
