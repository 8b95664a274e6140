// Reference ids for a Hugging Face tokenizer.json from @lenml/tokenizers (the tokenizers port of
// transformers.js), loaded from local files only.
// usage: node encode.mjs TOKENIZER.json IN.json OUT.json
// IN is a JSON list of strings; OUT gets a list of id lists, without special tokens added
// (special tokens written in the text are still matched). tokenizer_config.json beside
// TOKENIZER.json is used when present, less its tokenizer_class: transformers.js's LlamaTokenizer
// with legacy=false replaces the file's pre-tokenizer and always prepends "\u2581" (the Python *slow*
// tokenizer's rule), whereas transformers loads tokenizer.json into the Rust fast tokenizer, which runs
// the file's pipeline as written. The base class does the same here.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { TokenizerLoader } from "@lenml/tokenizers";

const [tokenizerPath, inPath, outPath] = process.argv.slice(2);
const configPath = join(dirname(tokenizerPath), "tokenizer_config.json");
const tokenizerJSON = JSON.parse(readFileSync(tokenizerPath, "utf8"));
// transformers.js's Metaspace reads only the older add_prefix_space field; files written since
// tokenizers 0.14 (Mistral's) carry prepend_scheme alone, which implies it.
for (const p of [tokenizerJSON.pre_tokenizer, ...(tokenizerJSON.pre_tokenizer?.pretokenizers ?? [])]) {
  if (p?.type === "Metaspace" && p.add_prefix_space === undefined) p.add_prefix_space = p.prepend_scheme !== "never";
}
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON,
  tokenizerConfig: { ...(existsSync(configPath) ? JSON.parse(readFileSync(configPath, "utf8")) : {}), tokenizer_class: undefined },
});
const texts = JSON.parse(readFileSync(inPath, "utf8"));
const ids = texts.map((t) => tokenizer.encode(t, { add_special_tokens: false }));
writeFileSync(outPath, JSON.stringify(ids));
