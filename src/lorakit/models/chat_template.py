"""Chat templates written for lorakit's built-in models (kept as strings so they ship inside the wheel).

QWEN3_CHAT_TEMPLATE renders the Qwen3 ChatML format with thinking blocks (see /work/shared/QWEN3.md):
- each message is `<|im_start|>{role}\\n{content}<|im_end|>\\n`; no default system message;
- assistant turns after the last user message carry `<think>\\n{reasoning}\\n</think>\\n\\n` when they are the
  final message or have reasoning; earlier assistant turns lose their think block;
- reasoning comes from `reasoning_content` or a leading `<think>...</think>` in `content`;
- the generation prompt is `<|im_start|>assistant\\n`, plus an empty think block when `enable_thinking` is false;
- tools (optional) go into the system turn, tool calls as `<tool_call>` JSON, tool results as
  `<tool_response>` inside a user turn.

CHATML_TEMPLATE is plain ChatML (SmolLM2-Instruct), used when a model file ships without a template.
"""

QWEN3_CHAT_TEMPLATE = r"""
{%- macro text(c) -%}
{%- if c is string -%}{{ c }}
{%- elif c is none -%}
{%- else -%}{%- for part in c -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- text(messages[0].content) + '\n\n' }}{%- endif %}
{{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}
{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif messages and messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + text(messages[0].content) + '<|im_end|>\n' }}
{%- endif %}
{#- The last user message that is not a tool result: assistant turns after it keep their reasoning. #}
{%- set ns = namespace(last_user=-1) %}
{%- for m in messages %}
{%- if m.role == 'user' and not (text(m.content).startswith('<tool_response>') and text(m.content).endswith('</tool_response>')) %}
{%- set ns.last_user = loop.index0 %}
{%- endif %}
{%- endfor %}
{%- for m in messages %}
{%- set content = text(m.content) %}
{%- if m.role == 'system' %}
{%- if not loop.first %}{{- '<|im_start|>system\n' + content + '<|im_end|>\n' }}{%- endif %}
{%- elif m.role == 'assistant' %}
{%- set reasoning = '' %}
{%- if m.reasoning_content is string %}
{%- set reasoning = m.reasoning_content %}
{%- elif '</think>' in content %}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] %}
{%- endif %}
{%- if '</think>' in content %}
{%- set content = content.split('</think>')[-1].lstrip('\n') %}
{%- endif %}
{%- set reasoning = reasoning.strip('\n') %}
{{- '<|im_start|>assistant\n' }}
{%- if loop.index0 > ns.last_user and (loop.last or reasoning) %}
{{- '<think>\n' + reasoning + '\n</think>\n\n' }}
{%- endif %}
{{- content }}
{%- for call in (m.tool_calls or []) %}
{%- set f = call.function if call.function is defined else call %}
{%- if loop.first and content %}{{- '\n' }}{%- elif not loop.first %}{{- '\n' }}{%- endif %}
{{- '<tool_call>\n{"name": "' + f.name + '", "arguments": ' }}
{%- if f.arguments is string %}{{- f.arguments }}{%- else %}{{- f.arguments | tojson }}{%- endif %}
{{- '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif m.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- else %}
{{- '<|im_start|>' + m.role + '\n' + content + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}
{%- endif %}
""".strip()

CHATML_TEMPLATE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
