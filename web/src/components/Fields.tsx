import { Table } from "@mantine/core";
import type { ReactNode } from "react";

/** A two-column table of labelled values, for detail views. */
export function Fields({ rows, label }: { rows: [string, ReactNode][]; label: string }) {
  return (
    <Table aria-label={label} withRowBorders={false} verticalSpacing={4}>
      <Table.Tbody>
        {rows.map(([k, v]) => (
          <Table.Tr key={k}>
            <Table.Th scope="row" style={{ width: "35%", verticalAlign: "top", fontWeight: 600 }}>
              {k}
            </Table.Th>
            <Table.Td style={{ wordBreak: "break-all" }}>{v === "" || v === undefined ? "—" : v}</Table.Td>
          </Table.Tr>
        ))}
      </Table.Tbody>
    </Table>
  );
}
