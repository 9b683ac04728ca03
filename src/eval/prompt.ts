// Prompt templates of task files.
//
//   {column}             the row's value (a list is joined with ", ")
//   {column|capitalize}  Python's str.capitalize (first character upper, the rest lower;
//                        lmms-eval's TextVQA prompt)
//   {options}            the choices as lines "A. text" (multiple choice)
//   [[ … ]]              an optional part: kept only when every placeholder inside is non-empty
//                        (ScienceQA's "[[Context: {hint}\n]]")
//   \n in the JSON string is a newline; "{{" and "}}" are literal braces.

const PLACEHOLDER = /\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)(?:\|([a-z]+))?\}/g;
const FILTERS = new Set(["capitalize"]);

/** Column names a template reads ("options" included when used). */
export function templateFields(template: string): string[] {
  const out = new Set<string>();
  for (const m of template.matchAll(PLACEHOLDER)) if (m[1]) out.add(m[1]);
  return [...out];
}

/** Throws on unknown filters or unbalanced optional parts (message names the problem). */
export function checkTemplate(template: string): void {
  for (const m of template.matchAll(PLACEHOLDER)) {
    if (m[2] && !FILTERS.has(m[2])) {
      throw new Error(`unknown filter "|${m[2]}" (known: capitalize)`);
    }
  }
  let depth = 0;
  for (const m of template.matchAll(/\[\[|\]\]/g)) {
    depth += m[0] === "[[" ? 1 : -1;
    if (depth < 0 || depth > 1) throw new Error('unbalanced or nested "[[ ]]"');
  }
  if (depth !== 0) throw new Error('unclosed "[["');
}

function capitalize(s: string): string {
  return s ? s[0].toUpperCase() + s.slice(1).toLowerCase() : s;
}

function fill(part: string, values: (name: string) => string): { text: string; empty: boolean } {
  let empty = false;
  const text = part.replace(PLACEHOLDER, (m, name?: string, filter?: string) => {
    if (m === "{{") return "{";
    if (m === "}}") return "}";
    let v = values(name!);
    if (v === "") empty = true;
    if (filter === "capitalize") v = capitalize(v);
    return v;
  });
  return { text, empty };
}

/** Render a template with `values(name)` for each placeholder. */
export function renderTemplate(template: string, values: (name: string) => string): string {
  return template.split(/(\[\[[\s\S]*?\]\])/).map((part) => {
    if (part.startsWith("[[") && part.endsWith("]]")) {
      const r = fill(part.slice(2, -2), values);
      return r.empty ? "" : r.text;
    }
    return fill(part, values).text;
  }).join("");
}

/** Choices as "A. text" lines. */
export function formatOptions(choices: readonly string[]): string {
  return choices.map((c, i) => `${String.fromCharCode(65 + i)}. ${c}`).join("\n");
}
