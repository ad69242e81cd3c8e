"""A chat template in the Qwen2.5-Instruct format, written for these tests (not shipped by lorakit).

Qwen2.5 shares Qwen3's tokenizer but not its template, so on the same real tokenizer it is a second
tool-calling family with other rules:
- a default system message when the conversation has none, and the tool list appended to the system turn;
- no thinking blocks at all;
- an assistant turn is `<|im_start|>assistant`, then `\\n` + content when there is content, then each
  call as `\\n<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, then `<|im_end|>\\n`;
- arguments always go through `tojson` (a JSON string would be quoted a second time);
- consecutive tool results share one user turn, each in `<tool_response>` tags.
"""

QWEN25_STYLE_TEMPLATE = r"""
{%- if messages and messages[0].role == 'system' %}
{%- set system_text = messages[0].content %}
{%- else %}
{%- set system_text = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' %}
{%- endif %}
{{- '<|im_start|>system\n' + system_text }}
{%- if tools %}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for t in tools %}{{- '\n' + (t | tojson) }}{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within ' }}
{{- '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for m in messages %}
{%- if m.role == 'system' %}
{%- if not loop.first %}{{- '<|im_start|>system\n' + m.content + '<|im_end|>\n' }}{%- endif %}
{%- elif m.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if m.content %}{{- '\n' + m.content }}{%- endif %}
{%- for call in (m.tool_calls or []) %}
{%- set f = call.function if call.function is defined else call %}
{{- '\n<tool_call>\n{"name": "' + f.name + '", "arguments": ' + (f.arguments | tojson) + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif m.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' + m.content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- else %}
{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
""".strip()
