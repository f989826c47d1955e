import { Table, UnstyledButton } from "@mantine/core";
import { useVirtualizer } from "@tanstack/react-virtual";
import { useMemo, useRef, useState, type ReactNode } from "react";
import { sortRows, type SortDir, type SortValue } from "../lib/table";

export type Column<T> = {
  key: string;
  header: string;
  render: (row: T) => ReactNode;
  /** Sortable when set. */
  sort?: (row: T) => SortValue;
};

const rowHeight = 41;

/**
 * A sortable table. Above `virtualizeAbove` rows only the rows in view are
 * rendered (inside a scrolling region), so 10,000 images stay responsive.
 */
export function DataTable<T>(props: {
  label: string;
  rows: readonly T[];
  columns: Column<T>[];
  rowKey: (r: T) => string;
  defaultSort?: { key: string; dir: SortDir };
  /**
   * The unfiltered list `rows` were filtered from. When given, it is
   * sorted once and a filter keystroke only picks rows out of it: no
   * re-sort of 10,000 rows per keystroke.
   */
  sortBase?: readonly T[];
  virtualizeAbove?: number;
  rowLabel?: (r: T) => string;
}) {
  const { columns, rows } = props;
  const [sort, setSort] = useState(props.defaultSort);
  // Columns are rebuilt on every render of a page; the sort function of
  // the sorted column only matters when the sort changes.
  const colsRef = useRef(columns);
  colsRef.current = columns;
  const base = props.sortBase ?? rows;
  const sortedBase = useMemo(() => {
    const col = colsRef.current.find((c) => c.key === sort?.key);
    return col?.sort && sort ? sortRows(base, col.sort, sort.dir) : base;
  }, [base, sort]);
  const sorted = useMemo(() => {
    if (!props.sortBase || rows.length === base.length) return sortedBase;
    const keep = new Set(rows);
    return sortedBase.filter((r) => keep.has(r));
  }, [sortedBase, rows, base, props.sortBase]);

  const virtual = sorted.length > (props.virtualizeAbove ?? 200);
  const scrollRef = useRef<HTMLDivElement>(null);
  const v = useVirtualizer({
    count: virtual ? sorted.length : 0,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => rowHeight,
    overscan: 12,
  });

  const items = virtual ? v.getVirtualItems() : [];
  const visible = virtual ? items.map((i) => sorted[i.index]) : sorted;
  const padTop = virtual && items.length ? items[0].start : 0;
  const padBottom = virtual && items.length ? v.getTotalSize() - items[items.length - 1].end : 0;

  const header = (
    <Table.Thead style={{ position: "sticky", top: 0, zIndex: 1, background: "var(--mantine-color-body)" }}>
      <Table.Tr>
        {columns.map((c) => {
          const active = sort?.key === c.key;
          const ariaSort = active ? (sort!.dir === "asc" ? "ascending" : "descending") : undefined;
          return (
            <Table.Th key={c.key} aria-sort={ariaSort} style={{ whiteSpace: "nowrap" }}>
              {c.sort ? (
                <UnstyledButton
                  fw={600}
                  fz="sm"
                  onClick={() =>
                    setSort(active && sort!.dir === "asc" ? { key: c.key, dir: "desc" } : { key: c.key, dir: "asc" })
                  }
                >
                  {c.header}
                  <span aria-hidden="true">{active ? (sort!.dir === "asc" ? " ▲" : " ▼") : " ↕"}</span>
                </UnstyledButton>
              ) : (
                c.header
              )}
            </Table.Th>
          );
        })}
      </Table.Tr>
    </Table.Thead>
  );

  return (
    <div
      ref={scrollRef}
      role="region"
      aria-label={props.label}
      tabIndex={0}
      style={{ overflow: "auto", maxHeight: virtual ? "70vh" : undefined, width: "100%" }}
    >
      <Table striped highlightOnHover verticalSpacing={6} aria-rowcount={sorted.length + 1}>
        {header}
        <Table.Tbody>
          {padTop > 0 && (
            <tr aria-hidden="true">
              <td style={{ height: padTop, padding: 0, border: 0 }} colSpan={columns.length} />
            </tr>
          )}
          {visible.map((r, i) => (
            <Table.Tr
              key={props.rowKey(r)}
              style={{ height: rowHeight }}
              aria-rowindex={(virtual ? items[i].index : i) + 2}
              aria-label={props.rowLabel?.(r)}
            >
              {columns.map((c) => (
                <Table.Td key={c.key} style={{ whiteSpace: "nowrap" }}>
                  {c.render(r)}
                </Table.Td>
              ))}
            </Table.Tr>
          ))}
          {padBottom > 0 && (
            <tr aria-hidden="true">
              <td style={{ height: padBottom, padding: 0, border: 0 }} colSpan={columns.length} />
            </tr>
          )}
        </Table.Tbody>
      </Table>
    </div>
  );
}
