// keys: keyboard navigation on the lists. Rows are focusable; ↑/↓ (or k/j) move, Home/End jump, Enter opens,
// Space toggles a row's checkbox. "/" jumps to the page's first search field.
export function listKeys(tbody, open) {
  tbody.addEventListener("keydown", (e) => {
    const row = e.target.closest("tr[tabindex]");
    if (!row || e.target !== row) return;
    const rows = Array.from(tbody.querySelectorAll("tr[tabindex]"));
    const i = rows.indexOf(row);
    let next = null;
    switch (e.key) {
      case "ArrowDown": case "j": next = rows[Math.min(i + 1, rows.length - 1)]; break;
      case "ArrowUp": case "k": next = rows[Math.max(i - 1, 0)]; break;
      case "Home": next = rows[0]; break;
      case "End": next = rows[rows.length - 1]; break;
      case "Enter": open(row); e.preventDefault(); return;
      case " ": {
        const box = row.querySelector("input[type=checkbox]");
        if (box) { box.click(); e.preventDefault(); }
        return;
      }
      default: return;
    }
    e.preventDefault();
    if (next) next.focus();
  });
}

// A focusable row that remembers what it stands for (restored after the list is drawn again).
export function row(key, cls) {
  const tr = document.createElement("tr");
  tr.tabIndex = 0;
  tr.dataset.key = key;
  if (cls) tr.className = cls;
  return tr;
}

// Redraw a list's rows, keeping keyboard focus on the row with the same key if it is still there.
export function replaceRows(tbody, rows) {
  const focused = document.activeElement && tbody.contains(document.activeElement)
    ? document.activeElement.closest("tr")?.dataset.key : null;
  tbody.replaceChildren(...rows);
  if (focused) {
    const again = Array.from(tbody.children).find((r) => r.dataset.key === focused);
    if (again) again.focus();
  }
}

document.addEventListener("keydown", (e) => {
  if (e.key !== "/" || e.target.closest("input, select, textarea")) return;
  const page = document.querySelector(".page:not([hidden])");
  const field = page && page.querySelector("input:not([type=checkbox]), select");
  if (field) { e.preventDefault(); field.focus(); }
});
