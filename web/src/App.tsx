import { lazy, Suspense } from "react";
import { Center, Loader } from "@mantine/core";
import { Route, Routes } from "react-router-dom";
import { useSession } from "./lib/session";
import { SignInPage } from "./pages/signin/SignInPage";
import { Shell } from "./pages/Shell";

const OverviewPage = lazy(() => import("./pages/overview/OverviewPage"));
const ImagesPage = lazy(() => import("./pages/images/ImagesPage"));
const JobsPage = lazy(() => import("./pages/jobs/JobsPage"));
const CatalogPage = lazy(() => import("./pages/catalog/CatalogPage"));
const NodesPage = lazy(() => import("./pages/nodes/NodesPage"));
const NodePage = lazy(() => import("./pages/nodes/NodePage"));
const PoolsPage = lazy(() => import("./pages/pools/PoolsPage"));
const TokensPage = lazy(() => import("./pages/tokens/TokensPage"));
const AuditPage = lazy(() => import("./pages/audit/AuditPage"));
const NotFoundPage = lazy(() => import("./pages/NotFoundPage"));

const loading = (
  <Center h={200}>
    <Loader aria-label="Loading" />
  </Center>
);

export function App() {
  const { state } = useSession();
  if (state.status === "loading") return loading;
  // Signed out: the sign-in page shows at the current address, so the user
  // lands back on the same page after signing in.
  if (state.status === "signed-out") return <SignInPage message={state.message} />;
  return (
    <Shell>
      <Suspense fallback={loading}>
        <Routes>
          <Route path="/" element={<OverviewPage />} />
          <Route path="/images" element={<ImagesPage />} />
          <Route path="/images/:id" element={<ImagesPage />} />
          <Route path="/jobs" element={<JobsPage />} />
          <Route path="/jobs/:id" element={<JobsPage />} />
          <Route path="/catalog" element={<CatalogPage />} />
          <Route path="/nodes" element={<NodesPage />} />
          <Route path="/nodes/:name" element={<NodePage />} />
          <Route path="/pools" element={<PoolsPage />} />
          <Route path="/pools/:id" element={<PoolsPage />} />
          <Route path="/tokens" element={<TokensPage />} />
          <Route path="/audit" element={<AuditPage />} />
          <Route path="*" element={<NotFoundPage />} />
        </Routes>
      </Suspense>
    </Shell>
  );
}
