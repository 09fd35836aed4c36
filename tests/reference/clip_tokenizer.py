"""Reference ids for the CLIP tokenizer parity test.

usage: clip_tokenizer.py TOKENIZER_DIR PROMPTS.json OUT.json
Loads TOKENIZER_DIR with transformers' CLIPTokenizer (as diffusers loads an SD `tokenizer/`
folder) and writes, for each prompt, the ids of
tokenizer(prompt, padding="max_length", max_length=77, truncation=True) -- what the
StableDiffusionPipeline does.
"""
import json
import sys

from transformers import CLIPTokenizer

tok_dir, prompts_path, out_path = sys.argv[1:4]
tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
prompts = json.load(open(prompts_path, encoding="utf-8"))
ids = [
    tokenizer(p, padding="max_length", max_length=77, truncation=True).input_ids
    for p in prompts
]
json.dump({"ids": ids, "pad_token_id": tokenizer.pad_token_id}, open(out_path, "w"))
